#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "lingua/config/config.h"
#include "lingua/config/train_config.h"
#include "lingua/config/validate.h"

using namespace lingua;

namespace {

// The error validate_config gives for a config with these overrides ("" when none).
std::string invalid(const std::vector<std::string>& args) {
  try {
    validate_config(parse_config<TrainConfig>(args));
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string invalid_built(const TrainConfig& c) {
  try {
    validate_config(c);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST(Validate, DefaultsAndTheShippedConfigsAreValid) {
  EXPECT_EQ(invalid({}), "");
  int n = 0;
  for (auto& f : std::filesystem::directory_iterator(std::string(LINGUA_SOURCE_DIR) + "/configs")) {
    EXPECT_EQ(invalid({"config=" + f.path().string()}), "") << f.path();
    ++n;
  }
  EXPECT_GE(n, 6);
}

TEST(Validate, HyperParameterRangesNameTheKeyAndTheRange) {
  struct Case {
    const char* arg;
    const char* key;
    const char* range;
  };
  const Case cases[] = {
      {"optim.beta1=1.0", "optim.beta1", "[0, 1)"},
      {"optim.beta1=-0.1", "optim.beta1", "[0, 1)"},
      {"optim.beta2=1", "optim.beta2", "[0, 1)"},
      {"optim.lr_min_ratio=1.5", "optim.lr_min_ratio", "[0, 1]"},
      {"optim.lr_min_ratio=-0.5", "optim.lr_min_ratio", "[0, 1]"},
      {"optim.lr=0", "optim.lr", "> 0"},
      {"optim.lr=-3e-4", "optim.lr", "> 0"},
      {"optim.epsilon=0", "optim.epsilon", "> 0"},
      {"optim.weight_decay=-0.1", "optim.weight_decay", ">= 0"},
      {"optim.warmup=-1", "optim.warmup", ">= 0"},
      {"optim.cycle_length=0", "optim.cycle_length", "> 0"},
      {"optim.decay_fraction=2", "optim.decay_fraction", "[0, 1]"},
      // Every optimizer group section under optim has the same ranges (its unset values take optim's).
      {"optim.stem.beta1=1.5", "optim.stem.beta1", "[0, 1)"},
      {"optim.stem.lr=0", "optim.stem.lr", "> 0"},
      {"optim.stem.epsilon=-1", "optim.stem.epsilon", "> 0"},
      {"threads=-1", "threads", ">= 0"},
      {"steps=0", "steps", ">= 1"},
      {"grad_acc_steps=0", "grad_acc_steps", ">= 1"},
      {"data.batch_size=0", "data.batch_size", ">= 1"},
      {"data.seq_len=0", "data.seq_len", ">= 1"},
      {"data.seq_len=-1", "data.seq_len", ">= 1"},
      {"data.prefetch_size=0", "data.prefetch_size", ">= 1"},
      {"logging.freq=0", "logging.freq", ">= 1"},
      {"eval.max_tokens=-5", "eval.max_tokens", ">= 0"},
      {"checkpoint.dump.every=-1", "checkpoint.dump.every", ">= 0"},
      {"model.norm_eps=0", "model.norm_eps", "> 0"},
      {"model.ffn_dim_multiplier=-1", "model.ffn_dim_multiplier", "> 0"},
      {"model.init_base_std=0", "model.init_base_std", "> 0"},
  };
  for (const Case& c : cases) {
    const std::string e = invalid({c.arg});
    EXPECT_TRUE(has(e, std::string("'") + c.key + "'")) << c.arg << ": " << e;
    EXPECT_TRUE(has(e, c.range)) << c.arg << ": " << e;
  }
  // The edges that are allowed.
  EXPECT_EQ(invalid({"optim.beta1=0", "optim.beta2=0.999", "optim.lr_min_ratio=1", "optim.weight_decay=0",
                     "optim.clip=-1", "threads=0", "optim.warmup=0"}),
            "");
  // inv_sqrt divides by the steps since warmup: warmup 0 would give a NaN learning rate.
  EXPECT_TRUE(has(invalid({"optim.scheduler=inv_sqrt", "optim.warmup=0"}), "optim.warmup"));
  EXPECT_EQ(invalid({"optim.scheduler=inv_sqrt", "optim.warmup=1"}), "");
}

TEST(Validate, NonFiniteValuesOfABuiltConfigAreNamed) {
  TrainConfig c = parse_config<TrainConfig>({});
  c.optim.lr = std::nan("");
  EXPECT_TRUE(has(invalid_built(c), "'optim.lr' must be a finite number")) << invalid_built(c);
  c = parse_config<TrainConfig>({});
  c.model.rope_theta = INFINITY;
  EXPECT_TRUE(has(invalid_built(c), "'model.rope_theta'")) << invalid_built(c);
  c = parse_config<TrainConfig>({});
  c.data.sources = {{"wiki", NAN}};
  EXPECT_TRUE(has(invalid_built(c), "'data.sources.wiki'")) << invalid_built(c);
}

TEST(Validate, TokensPerMicroBatchAreLimitedTo32BitIndices) {
  const std::string e = invalid({"data.batch_size=100000000", "data.seq_len=2048"});
  EXPECT_TRUE(has(e, "data.batch_size")) << e;
  EXPECT_TRUE(has(e, "data.seq_len")) << e;
  EXPECT_TRUE(has(e, "2147483647")) << e;
}

TEST(Validate, TrainingBuffersOverThisMachinesMemoryAreNamed) {
  ASSERT_GT(host_memory_bytes(), 0u);
  TrainConfig c = parse_config<TrainConfig>({"data.batch_size=1000000", "data.seq_len=1000", "data.prefetch_size=1000000"});
  EXPECT_EQ(invalid_built(c), "");  // within 32-bit indices; only training allocates the shuffle buffer
  try {
    check_training_memory(c);
    FAIL() << "a 3.6 EiB shuffle buffer was accepted";
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "data.prefetch_size")) << e.what();
    EXPECT_TRUE(has(e.what(), "of memory")) << e.what();
  }
  EXPECT_NO_THROW(check_training_memory(parse_config<TrainConfig>({})));
  c = parse_config<TrainConfig>({"grad_acc_steps=2000000000", "data.batch_size=1000", "data.seq_len=1000"});
  EXPECT_EQ(invalid_built(c), "");
  try {
    check_training_memory(c);
    FAIL() << "a step of 2e9 micro-batches was accepted";
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "'grad_acc_steps'")) << e.what();
  }
}

TEST(Validate, MaxSeqlenFollowsSeqLenWhenNotSet) {
  EXPECT_EQ(parse_config<TrainConfig>({"data.seq_len=64"}).model.max_seqlen.value(), 64);
  EXPECT_EQ(parse_config<TrainConfig>({}).model.max_seqlen.value(), 2048);
  EXPECT_EQ(parse_config<TrainConfig>({"data.seq_len=64", "model.max_seqlen=128"}).model.max_seqlen.value(), 128);
  // A params.json without it (a Lingua one) too.
  EXPECT_EQ(config_from_json_text<TrainConfig>("{\"data\": {\"seq_len\": 96}}", "params.json").model.max_seqlen.value(),
            96);
  // The dumped config records the resolved value.
  EXPECT_TRUE(has(config_to_yaml(parse_config<TrainConfig>({"data.seq_len=64"})), "max_seqlen: 64"));
  // Longer sequences than the model's context are an error naming both.
  const std::string e = invalid({"data.seq_len=64", "model.max_seqlen=32"});
  EXPECT_TRUE(has(e, "data.seq_len") && has(e, "model.max_seqlen")) << e;
  TrainConfig built;  // not read from anywhere: not resolved
  EXPECT_TRUE(has(invalid_built(built), "'model.max_seqlen' is not set")) << invalid_built(built);
}

TEST(Validate, SelectiveActivationCheckpointingRecomputesTheNorms) {
  EXPECT_FALSE(parse_config<TrainConfig>({}).model.recompute_norms);
  EXPECT_FALSE(parse_config<TrainConfig>({"distributed.selective_activation_checkpointing=false"}).model.recompute_norms);
  EXPECT_TRUE(parse_config<TrainConfig>({"distributed.selective_activation_checkpointing=true"}).model.recompute_norms);
  EXPECT_TRUE(parse_config<TrainConfig>({"model.recompute_norms=true"}).model.recompute_norms);
}

TEST(Validate, ValidationMaxStepsCapsTheValidationTokens) {
  TrainConfig c = parse_config<TrainConfig>({"eval.validation.max_steps=3", "data.batch_size=2", "data.seq_len=16"});
  EXPECT_EQ(c.eval.max_tokens, 3 * 2 * 16);
  c = parse_config<TrainConfig>(
      {"eval.validation.max_steps=3", "data.batch_size=2", "data.seq_len=16", "eval.max_tokens=50"});
  EXPECT_EQ(c.eval.max_tokens, 50);  // the smaller cap
  c = parse_config<TrainConfig>({"eval.validation.max_steps=9223372036854775807", "data.seq_len=16"});
  EXPECT_EQ(c.eval.max_tokens, INT64_MAX);  // no overflow
  EXPECT_EQ(parse_config<TrainConfig>({}).eval.max_tokens, 0);
  EXPECT_TRUE(has(invalid({"eval.validation.max_steps=0"}), "eval.validation.max_steps"));
  EXPECT_TRUE(has(invalid({"eval.validation.sources=[other]"}), "not supported"));
}

TEST(Validate, LinguaKeysOfMissingFeaturesAreRefusedWithWhatToDoOrNoted) {
  struct Case {
    const char* arg;
    const char* says;
  };
  const Case cases[] = {
      {"distributed.float8_recipe=rowwise", "set it to null"},
      {"distributed.model_dtype=fp16", "use bf16"},
      {"model.sliding_window=512", "set it to null"},
      {"checkpoint.continue_training_from_init=true", "name the checkpoint whose run continues"},
  };
  for (const Case& c : cases) {
    const std::string e = invalid({c.arg});
    const std::string key = std::string(c.arg).substr(0, std::string(c.arg).find('='));
    EXPECT_TRUE(has(e, "'" + key + "'")) << c.arg << ": " << e;
    EXPECT_TRUE(has(e, c.says)) << c.arg << ": " << e;
  }
  EXPECT_EQ(invalid({"probe_freq=null", "model.sliding_window=null", "distributed.float8_recipe=null"}), "");
  EXPECT_EQ(invalid({"probe_freq=0"}), "");  // older lingua.cpp configs
  // Lingua's multi-GPU sizes load with a note; probes are run (no note).
  const TrainConfig multi = parse_config<TrainConfig>(
      {"distributed.tp_size=2", "distributed.gpus_per_node=8", "distributed.dp_shard=8", "probe_freq=100"});
  EXPECT_EQ(invalid({"distributed.tp_size=2", "distributed.gpus_per_node=8", "probe_freq=100"}), "");
  const std::vector<std::string> multi_notes = config_notes(multi);
  auto noted = [&](const std::string& key, const std::string& says) {
    for (const std::string& n : multi_notes)
      if (has(n, key) && has(n, says)) return true;
    return false;
  };
  EXPECT_TRUE(noted("distributed.gpus_per_node", "the processes come from the launcher"));
  EXPECT_TRUE(noted("distributed.gpus_per_node", "batch is that per process"));
  EXPECT_TRUE(noted("distributed.tp_size", "no tensor parallelism"));
  EXPECT_FALSE(noted("probe_freq", ""));
  EXPECT_TRUE(has(invalid({"distributed.tp_size=0"}), "distributed.tp_size"));
  // Tokenizers lingua.cpp does not have are refused naming those it has.
  try {
    parse_config<TrainConfig>({"data.tokenizer.name=hf_json"});
    FAIL();
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "'hf_json' is not one of: bytes, sp, tiktoken")) << e.what();
  }
}

TEST(Validate, NotesForKeysWithNoEffect) {
  EXPECT_TRUE(config_notes(parse_config<TrainConfig>({})).empty());
  // Unset, the Lingua keys say nothing; given, one line each, whatever the value (compile: false
  // too: lingua.cpp never compiles anything); model_dtype bf16 is what CUDA matmuls use.
  const std::vector<std::string> notes = config_notes(parse_config<TrainConfig>(
      {"distributed.compile=false", "env.OMP_NUM_THREADS=1", "eval.harness={tasks: [piqa]}", "gc_collect_freq=10",
       "checkpoint.eval.keep=2", "distributed.model_dtype=bf16", "distributed.compile=null"}));
  EXPECT_TRUE(config_notes(parse_config<TrainConfig>({"distributed.compile=false"})).size() == 1u);
  EXPECT_TRUE(has(config_notes(parse_config<TrainConfig>({"distributed.model_dtype=fp32"})).at(0),
                  "distributed.model_dtype has no effect"));
  EXPECT_TRUE(has(invalid({"distributed.fsdp_type=hybrid"}), "no_shard, full_shard"));
  ASSERT_EQ(notes.size(), 4u) << [&] {
    std::string s;
    for (auto& n : notes) s += n + "\n";
    return s;
  }();
  EXPECT_EQ(notes[0], "gc_collect_freq has no effect: lingua.cpp has no garbage collector to schedule");
  EXPECT_TRUE(has(notes[1], "env.OMP_NUM_THREADS has no effect")) << notes[1];
  EXPECT_TRUE(has(notes[2], "checkpoint.eval.keep has no effect")) << notes[2];
  EXPECT_TRUE(has(notes[3], "eval.harness.tasks has no effect: no local task file for piqa (data/tasks/<name>.jsonl"))
      << notes[3];
  // (piqa has no local file: a note of its own, checked below)
}

// eval.harness.tasks (Lingua's lm-eval names) become eval.tasks read from <eval.task_dir>/<name>.jsonl,
// their type from the file's fields, num_fewshot / limit from the task or the section.
TEST(Validate, HarnessTasksAreLocalTaskFiles) {
  const std::string dir = ::testing::TempDir() + "/harness_tasks_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  std::ofstream(dir + "/hellaswag.jsonl") << "{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"gold\": 0}\n";
  std::ofstream(dir + "/gsm.jsonl") << "not json\n{\"context\": \"1+1=\", \"answer\": \"2\"}\n";
  std::ofstream(dir + "/wiki.jsonl") << "{\"text\": \"some text\"}\n";
  TrainConfig c = parse_config<TrainConfig>(
      {"eval.task_dir=" + dir, "eval.harness={tasks: [hellaswag, {task: gsm, num_fewshot: 5, dataset_kwargs: {x: 1}}, "
                               "wiki], num_fewshot: 2, limit: 10, fewshot_random_seed: 7, log_samples: true}",
       "eval.tasks=[{name: mine, path: " + dir + "/hellaswag.jsonl}]"});
  ASSERT_EQ(c.eval.tasks.size(), 4u);
  EXPECT_EQ(c.eval.tasks[0].name, "mine");
  const TaskConfig &h = c.eval.tasks[1], &g = c.eval.tasks[2], &w = c.eval.tasks[3];
  EXPECT_EQ(h.name, "hellaswag");
  EXPECT_EQ(h.path, dir + "/hellaswag.jsonl");
  EXPECT_EQ(h.type, "multiple_choice");
  EXPECT_EQ(h.num_fewshot, 2);
  EXPECT_EQ(h.limit, 10);
  EXPECT_EQ(h.fewshot_seed, 7);
  EXPECT_EQ(g.type, "generate_until");
  EXPECT_EQ(g.num_fewshot, 5);
  EXPECT_EQ(w.type, "loglikelihood_rolling");
  c.resolve_defaults();  // (again, as when params.json is read: no second copy)
  EXPECT_EQ(c.eval.tasks.size(), 4u);
  EXPECT_TRUE(config_notes(c).empty());
  // A name without a file is left out, with a note naming it.
  const TrainConfig m = parse_config<TrainConfig>({"eval.task_dir=" + dir, "eval.harness={tasks: [hellaswag, boolq]}"});
  ASSERT_EQ(m.eval.tasks.size(), 1u);
  EXPECT_EQ(m.eval.tasks[0].name, "hellaswag");
  ASSERT_EQ(config_notes(m).size(), 1u);
  EXPECT_TRUE(has(config_notes(m)[0], "no local task file for boolq")) << config_notes(m)[0];
  try {
    parse_config<TrainConfig>({"eval.harness={tasks: [{num_fewshot: 1}]}"});
    FAIL() << "a task without a name was accepted";
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "eval.harness.tasks[0]")) << e.what();
  }
}
