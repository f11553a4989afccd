#include "lingua/checkpoint/train_state.h"

#include "lingua/core/error.h"
#include "lingua/data/json_fields.h"

namespace lingua {

using json = nlohmann::json;

std::string train_state_json(const TrainState& state) {
  json st = {{"step", state.step},
             {"optimizer_steps", state.optimizer_steps},
             {"scheduler", {{"last_step", state.step}}},
             {"data_loader", state.data_loader}};
  if (state.flops >= 0) st["flops"] = state.flops;
  if (!state.growth_ramp.is_null()) st["growth_ramp"] = state.growth_ramp;
  if (state.resplit_from > 0) st["data_resplit"] = {{"from_ranks", state.resplit_from}, {"at_step", state.resplit_step}};
  return st.dump(1) + "\n";
}

TrainState parse_train_state(const std::string& text, const std::string& origin) {
  json st;
  try {
    st = json::parse(text);
  } catch (const json::exception& e) {
    fail(origin, ": not valid JSON: ", e.what());
  }
  const std::string what = origin + ": train state";
  TrainState t;
  t.step = json_int(st, "step", 0, kMaxStateCount, what);
  t.optimizer_steps = json_int(st, "optimizer_steps", 0, kMaxStateCount, what);
  t.data_loader = json_field(st, "data_loader", what);
  if (st.contains("flops")) {
    LINGUA_CHECK(st["flops"].is_number() && st["flops"].get<double>() >= 0, what, ": \"flops\" is not a number >= 0");
    t.flops = st["flops"].get<double>();
  }
  if (st.contains("data_resplit")) {
    const json& r = st["data_resplit"];
    t.resplit_from = json_int(r, "from_ranks", 1, INT32_MAX, what + ": data_resplit");
    t.resplit_step = json_int(r, "at_step", 0, kMaxStateCount, what + ": data_resplit");
  }
  if (st.contains("growth_ramp")) t.growth_ramp = st["growth_ramp"];  // (checked where it is read)
  return t;
}

}  // namespace lingua
