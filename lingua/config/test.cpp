#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "lingua/config/config.h"
#include "lingua/config/train_config.h"
#include "lingua/config/validate.h"

using namespace lingua;

namespace {

struct Inner {
  int a = 1;
  std::vector<int> layers;
  std::optional<double> maybe;
  template <class V> void visit(V& v) {
    v("a", a, "an int");
    v("layers", layers, "a list");
    v("maybe", maybe, "optional");
  }
};
struct Outer {
  std::string name = "x";
  double lr = 0.5;
  bool flag = false;
  std::string mode = "one";
  std::map<std::string, double> weights;
  Inner inner;
  std::vector<std::string> words;
  std::optional<std::string> label;
  AnyValue extra;
  template <class V> void visit(V& v) {
    v("name", name, "name");
    v("lr", lr, "rate");
    v("flag", flag, "flag");
    v.choice("mode", mode, {"one", "two"}, "mode");
    v("weights", weights, "weights");
    v("inner", inner, "inner");
    v("words", words, "texts");
    v("label", label, "optional text");
    v("extra", extra, "any YAML");
  }
};

std::string write_tmp(const std::string& text) {
  static int n = 0;
  auto dir = std::filesystem::temp_directory_path() / ("lingua_config_test_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  auto p = dir / ("c" + std::to_string(n++) + ".yaml");
  std::ofstream(p) << text;
  return p.string();
}

std::string error_of(const std::vector<std::string>& args) {
  try {
    parse_config<Outer>(args);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Config, DefaultsYamlDotlistPrecedence) {
  auto p = write_tmp("name: fromfile\nlr: 0.1\ninner:\n  a: 7\n");
  Outer c = parse_config<Outer>({"config=" + p, "lr=0.25", "inner.layers=[1,3]", "weights={wiki: 0.8, code: 0.2}"});
  EXPECT_EQ(c.name, "fromfile");
  EXPECT_DOUBLE_EQ(c.lr, 0.25);
  EXPECT_EQ(c.inner.a, 7);
  EXPECT_EQ(c.inner.layers, (std::vector<int>{1, 3}));
  EXPECT_DOUBLE_EQ(c.weights.at("wiki"), 0.8);
  EXPECT_DOUBLE_EQ(c.weights.at("code"), 0.2);
  EXPECT_FALSE(c.flag);
  // Dot-list order is the precedence between overrides too; config= may come anywhere.
  Outer d = parse_config<Outer>({"lr=1", "config=" + p, "lr=2", "weights.wiki=3"});
  EXPECT_DOUBLE_EQ(d.lr, 2);
  EXPECT_DOUBLE_EQ(d.weights.at("wiki"), 3);
}

TEST(Config, OptionalAndNull) {
  Outer c = parse_config<Outer>({"inner.maybe=0.5"});
  ASSERT_TRUE(c.inner.maybe.has_value());
  EXPECT_DOUBLE_EQ(*c.inner.maybe, 0.5);
  Outer d = parse_config<Outer>({"inner.maybe=null"});
  EXPECT_FALSE(d.inner.maybe.has_value());
}

TEST(Config, UnknownKeyInFileNamesKeyPathLineAndValidKeys) {
  auto p = write_tmp("name: a\ninner:\n  a: 2\n  bogus: 3\n");
  std::string e = error_of({"config=" + p});
  EXPECT_NE(e.find("'bogus'"), std::string::npos) << e;
  EXPECT_NE(e.find("inner.bogus"), std::string::npos) << e;
  EXPECT_NE(e.find(p + ":4"), std::string::npos) << e;
  EXPECT_NE(e.find("a, layers, maybe"), std::string::npos) << e;
}

TEST(Config, UnknownKeyOnCommandLine) {
  std::string e = error_of({"inner.nope=1"});
  EXPECT_NE(e.find("inner.nope"), std::string::npos) << e;
  EXPECT_NE(e.find("inner.a"), std::string::npos) << e;
  e = error_of({"nope=1"});
  EXPECT_NE(e.find("'nope'"), std::string::npos) << e;
  EXPECT_NE(e.find("name"), std::string::npos) << e;
  e = error_of({"justtext"});
  EXPECT_NE(e.find("key=value"), std::string::npos) << e;
}

TEST(Config, WrongTypesNameKeyAndValue) {
  std::string e = error_of({"inner.a=abc"});
  EXPECT_NE(e.find("inner.a"), std::string::npos) << e;
  EXPECT_NE(e.find("'abc'"), std::string::npos) << e;
  EXPECT_NE(e.find("integer"), std::string::npos) << e;
  e = error_of({"inner.a=1.5"});
  EXPECT_NE(e.find("integer"), std::string::npos) << e;
  e = error_of({"flag=maybe"});
  EXPECT_NE(e.find("boolean"), std::string::npos) << e;
  e = error_of({"lr=[1,2]"});
  EXPECT_NE(e.find("number"), std::string::npos) << e;
  e = error_of({"inner.layers=3"});
  EXPECT_NE(e.find("list"), std::string::npos) << e;
  e = error_of({"inner.layers=[1, x]"});
  EXPECT_NE(e.find("inner.layers[1]"), std::string::npos) << e;
  e = error_of({"inner=5"});
  EXPECT_NE(e.find("mapping"), std::string::npos) << e;
  auto p = write_tmp("lr: fast\n");
  e = error_of({"config=" + p});
  EXPECT_NE(e.find(p + ":1"), std::string::npos) << e;
  EXPECT_NE(e.find("'fast'"), std::string::npos) << e;
  // Big integers as floats are accepted when exact; out-of-range is an error.
  EXPECT_EQ(parse_config<Outer>({"inner.a=1e3"}).inner.a, 1000);
  e = error_of({"inner.a=99999999999"});
  EXPECT_NE(e.find("integer"), std::string::npos) << e;
}

TEST(Config, ChoiceRejectsUnknownValue) {
  std::string e = error_of({"mode=three"});
  EXPECT_NE(e.find("'three'"), std::string::npos) << e;
  EXPECT_NE(e.find("one, two"), std::string::npos) << e;
  EXPECT_EQ(parse_config<Outer>({"mode=two"}).mode, "two");
}

TEST(Config, FileErrors) {
  EXPECT_NE(error_of({"config=/nonexistent/x.yaml"}).find("not found: /nonexistent/x.yaml"), std::string::npos);
  auto p = write_tmp("a: [1, 2\n");
  EXPECT_NE(error_of({"config=" + p}).find("YAML syntax error"), std::string::npos);
  auto q = write_tmp("- 1\n- 2\n");
  EXPECT_NE(error_of({"config=" + q}).find("mapping"), std::string::npos);
}

TEST(Config, DumpedYamlRoundTrips) {
  TrainConfig c = parse_config<TrainConfig>({"model.dim=96", "data.sources={a: 1.5}", "model.n_kv_heads=2",
                                             "optim.scheduler=wsd", "name=run"});
  std::string y = config_to_yaml(c);
  auto p = write_tmp(y);
  TrainConfig d = parse_config<TrainConfig>({"config=" + p});
  EXPECT_EQ(config_to_yaml(d), y);
  EXPECT_EQ(d.model.dim, 96);
  EXPECT_EQ(d.model.n_kv_heads.value(), 2);
  EXPECT_FALSE(d.model.head_dim.has_value());
  EXPECT_DOUBLE_EQ(d.data.sources.at("a"), 1.5);
}

TEST(Config, HelpListsEveryKeyWithDefault) {
  std::string h = config_help<TrainConfig>();
  for (const char* k : {"data.tokenizer.name = bytes", "optim.lr = 3e-04", "model.dim = 512", "checkpoint.dump.every = 1000",
                        "optim.scheduler = cosine", "data.sources = {}", "model.head_dim = ~"})
    EXPECT_NE(h.find(k), std::string::npos) << k << "\n" << h;
  EXPECT_NE(h.find("[constant|linear|inv_sqrt|cosine|wsd]"), std::string::npos);
}

TEST(Config, TextKeysTakeTheArgumentTextExactly) {
  // A string key's value is the text after the first '=', not a YAML scalar: spaces, YAML
  // keywords and numbers stay as typed.
  EXPECT_EQ(parse_config<Outer>({"name=It was a dark night, and the sea "}).name, "It was a dark night, and the sea ");
  EXPECT_EQ(parse_config<Outer>({"name=  two leading"}).name, "  two leading");
  EXPECT_EQ(parse_config<Outer>({"name=yes"}).name, "yes");
  EXPECT_EQ(parse_config<Outer>({"name=null"}).name, "null");
  EXPECT_EQ(parse_config<Outer>({"name=007"}).name, "007");
  EXPECT_EQ(parse_config<Outer>({"name=a=b # not a comment"}).name, "a=b # not a comment");
  EXPECT_EQ(parse_config<Outer>({"name="}).name, "");
  EXPECT_EQ(parse_config<Outer>({"mode=two"}).mode, "two");
  EXPECT_NE(error_of({"mode=two "}).find("'two '"), std::string::npos);  // exact: the space is part of it
  // Optional text: null (or ~) unsets it, anything else is exact.
  EXPECT_FALSE(parse_config<Outer>({"label=null"}).label.has_value());
  EXPECT_EQ(parse_config<Outer>({"label= x "}).label.value(), " x ");
  // Other keys are still YAML.
  Outer c = parse_config<Outer>({"lr=0.25", "weights={wiki: 0.8}", "inner.maybe=null", "inner.layers=[1, 2]"});
  EXPECT_DOUBLE_EQ(c.lr, 0.25);
  EXPECT_DOUBLE_EQ(c.weights.at("wiki"), 0.8);
  EXPECT_FALSE(c.inner.maybe.has_value());
  EXPECT_EQ(c.inner.layers, (std::vector<int>{1, 2}));
}

TEST(Config, TextListsAreYamlListsOrOneExactItem) {
  // Quoted items of a YAML list keep their exact characters.
  EXPECT_EQ(parse_config<Outer>({"words=[\"a \", \" b\", \"\\n\\n\"]"}).words,
            (std::vector<std::string>{"a ", " b", "\n\n"}));
  EXPECT_EQ(parse_config<Outer>({"words=[x, y]"}).words, (std::vector<std::string>{"x", "y"}));
  // A value not starting with '[' is one item, as typed.
  EXPECT_EQ(parse_config<Outer>({"words=the sea "}).words, (std::vector<std::string>{"the sea "}));
  EXPECT_EQ(parse_config<Outer>({"words=a, b"}).words, (std::vector<std::string>{"a, b"}));
  EXPECT_TRUE(parse_config<Outer>({"words="}).words.empty());
  std::string e = error_of({"words=[x"});
  EXPECT_NE(e.find("words=[x"), std::string::npos) << e;
  EXPECT_NE(e.find("YAML list"), std::string::npos) << e;
}

TEST(Config, CommandLineErrorsNameTheArgumentNotTheFile) {
  auto p = write_tmp("name: fromfile\ninner:\n  a: 7\n");
  std::string e = error_of({"config=" + p, "inner.a=abc"});
  EXPECT_NE(e.find("'inner.a'"), std::string::npos) << e;
  EXPECT_NE(e.find("command-line argument 'inner.a=abc'"), std::string::npos) << e;
  EXPECT_EQ(e.find(p), std::string::npos) << e;
  // A parent set on the command line: its children's errors name that argument.
  e = error_of({"config=" + p, "inner={a: x}"});
  EXPECT_NE(e.find("'inner.a'"), std::string::npos) << e;
  EXPECT_NE(e.find("command-line argument 'inner={a: x}'"), std::string::npos) << e;
  e = error_of({"config=" + p, "inner={bogus: 1}"});
  EXPECT_NE(e.find("command-line argument 'inner={bogus: 1}'"), std::string::npos) << e;
  e = error_of({"config=" + p, "weights.wiki=lots"});
  EXPECT_NE(e.find("command-line argument 'weights.wiki=lots'"), std::string::npos) << e;
  // A later argument replacing the bad one: no error.
  EXPECT_EQ(parse_config<Outer>({"config=" + p, "inner.a=abc", "inner={a: 3}"}).inner.a, 3);
  // Errors from the file keep file:line, overrides present or not.
  auto q = write_tmp("name: x\ninner:\n  a: abc\n");
  e = error_of({"config=" + q, "lr=0.1"});
  EXPECT_NE(e.find(q + ":3"), std::string::npos) << e;
}

TEST(Config, NonFiniteNumbersAreErrors) {
  for (const char* v : {"lr=.nan", "lr=.NaN", "lr=.inf", "lr=-.inf", "inner.maybe=.nan", "weights={a: .inf}"}) {
    std::string e = error_of({v});
    EXPECT_NE(e.find("finite"), std::string::npos) << v << ": " << e;
    EXPECT_NE(e.find(v), std::string::npos) << v << ": " << e;  // the argument
  }
  auto p = write_tmp("name: x\nlr: .nan\n");
  std::string e = error_of({"config=" + p});
  EXPECT_NE(e.find("'lr'"), std::string::npos) << e;
  EXPECT_NE(e.find(p + ":2"), std::string::npos) << e;
}

TEST(Config, ConfigFileThatIsADirectory) {
  auto dir = std::filesystem::path(write_tmp("")).parent_path();
  std::string e = error_of({"config=" + dir.string()});
  EXPECT_NE(e.find(dir.string() + " is a directory, expected a YAML file"), std::string::npos) << e;
}

TEST(Config, NullStringsAndAnyValues) {
  // Lingua writes unset optional strings as null.
  auto p = write_tmp("name: null\nextra: [hellaswag, {task: nq_open, num_fewshot: 5}]\n");
  Outer c = parse_config<Outer>({"config=" + p});
  EXPECT_EQ(c.name, "");
  EXPECT_EQ(c.extra.yaml, "[hellaswag, {task: nq_open, num_fewshot: 5}]");
  // Written back as it was given, and read again the same.
  std::string y = config_to_yaml(c);
  EXPECT_NE(y.find("nq_open"), std::string::npos) << y;
  Outer d = parse_config<Outer>({"config=" + write_tmp(y)});
  EXPECT_EQ(d.extra, c.extra);
  EXPECT_TRUE(parse_config<Outer>({}).extra.yaml.empty());
}

// Found by fuzz/fuzz_config_yaml: a config accepted with text that is not UTF-8 could not be written
// to params.json (a JSON exception at the first checkpoint, reported as an internal error).
TEST(Config, TextMustBeValidUtf8) {
  std::string e = error_of({"config=" + write_tmp("name: caf\xe9\n")});
  EXPECT_NE(e.find("'name'"), std::string::npos) << e;
  EXPECT_NE(e.find("not valid UTF-8"), std::string::npos) << e;
  EXPECT_NE(e.find(":1)"), std::string::npos) << e;  // the file's line
  e = error_of({"weights={\"w\xff\": 1.0}"});
  EXPECT_NE(e.find("'weights'"), std::string::npos) << e;
  EXPECT_NE(error_of({"inner.layers=[1]", "mode=one", "name=\xc3"}).find("'name'"), std::string::npos);
  Outer o = parse_config<Outer>({"name=caf\xc3\xa9"});  // valid UTF-8 is fine, and JSON can hold it
  EXPECT_EQ(o.name, "caf\xc3\xa9");
  TrainConfig t = parse_config<TrainConfig>({"name=caf\xc3\xa9", "data.sources={\xc3\xa9: 1.0}"});
  EXPECT_EQ(config_from_json_text<TrainConfig>(config_to_json(t), "params.json").data.sources.count("\xc3\xa9"), 1u);
}

// Found by fuzz/fuzz_params_json: a params.json that is JSON but not an object threw a YAML exception.
TEST(Config, JsonMustBeAnObject) {
  for (const std::string text : {"1", "\"text\"", "[1, 2]", "null", "true"}) {
    try {
      config_from_json_text<Outer>(text, "ckpt/params.json");
      FAIL() << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("ckpt/params.json: expected a mapping (a JSON object)"), std::string::npos)
          << e.what();
    }
  }
  EXPECT_EQ(config_from_json_text<Outer>("{}", "params.json").name, "x");
}

// Found by fuzz/fuzz_config_yaml: params.json turned text that looks like a number or a boolean
// into one ("1e5" came back as "100000.0", the path "0x10" as "16", "true" as a boolean).
TEST(Config, JsonKeepsTextThatLooksLikeANumber) {
  TrainConfig t;
  t.name = "1e5";
  t.dump_dir = "0x10";
  t.data.root_dir = "007";
  t.data.tokenizer.path = "true";
  t.data.sources = {{"1e5", 1.0}};
  t.model.max_seqlen = 64;  // set: reading resolves an unset one
  const std::string json = config_to_json(t);
  const TrainConfig back = config_from_json_text<TrainConfig>(json, "params.json");
  EXPECT_EQ(back.name, "1e5") << json;
  EXPECT_EQ(back.dump_dir, "0x10");
  EXPECT_EQ(back.data.root_dir, "007");
  EXPECT_EQ(back.data.tokenizer.path, "true");
  EXPECT_EQ(back.data.sources.count("1e5"), 1u);
  EXPECT_EQ(config_to_yaml(back), config_to_yaml(t));
  EXPECT_NE(config_to_yaml(t).find("name: 1e5\n"), std::string::npos);  // config.yaml unchanged
}
