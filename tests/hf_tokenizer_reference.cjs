// The reference ids for lingua/data/test_hf_tokenizer.cpp: transformers.js's tokenizer (npm
// @lenml/tokenizers) built from a tokenizer.json (and tokenizer_config.json) on a UTF-8 file,
// without the post-processor's special tokens.
//   node tests/hf_tokenizer_reference.cjs <data/npm> <tokenizer.json> <tokenizer_config.json> <input file>
// Prints the ids as one JSON array.
const path = require("path");
const fs = require("fs");
const [npm, json, config, input] = process.argv.slice(2);
const { TokenizerLoader } = require(path.resolve(npm, "@lenml/tokenizers"));
const tok = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(fs.readFileSync(json, "utf8")),
  tokenizerConfig: JSON.parse(fs.readFileSync(config, "utf8")),
});
process.stdout.write(JSON.stringify(Array.from(tok.encode(fs.readFileSync(input, "utf8"), { add_special_tokens: false }))));
