// The reference ids for lingua/data/test_tiktoken.cpp: npm tiktoken's encoder (the original's
// Rust core built to WASM) on a UTF-8 file, every special token's text encoded as ordinary text,
// the text encoded in slices of 400,000 characters (code points) as Lingua's tokenizer does.
//   node tests/tiktoken_reference.cjs <data/npm/tiktoken> <encoding: cl100k_base | o200k_base> <input file>
// Prints the ids as one JSON array.
const path = require("path");
const fs = require("fs");
const [pkg, encoding, input] = process.argv.slice(2);
const { get_encoding } = require(path.resolve(pkg, "tiktoken.cjs"));
const enc = get_encoding(encoding);
const chars = Array.from(fs.readFileSync(input, "utf8"));
const ids = [];
for (let i = 0; i < chars.length; i += 400000)
  for (const id of enc.encode(chars.slice(i, i + 400000).join(""), [], [])) ids.push(id);
process.stdout.write(JSON.stringify(ids));
enc.free();
