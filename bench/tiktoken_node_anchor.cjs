// Anchor for lingua_tokenizer_bench on a machine without Python tiktoken: npm tiktoken (the
// original's Rust core as WASM) encoding the same paragraphs in one thread, median of `repeat`.
//   node bench/tiktoken_node_anchor.cjs data/npm/tiktoken cl100k_base <file> [repeat=5]
const path = require("path");
const fs = require("fs");
const [pkg, encoding, file, repeat = "5"] = process.argv.slice(2);
const { get_encoding } = require(path.resolve(pkg, "tiktoken.cjs"));
const enc = get_encoding(encoding);
const text = fs.readFileSync(file, "utf8");
const docs = text.split(/(?<=\n\n)/);
const secs = [];
let tokens = 0;
for (let r = 0; r < +repeat; ++r) {
  const t0 = process.hrtime.bigint();
  tokens = 0;
  for (const d of docs) tokens += enc.encode(d, [], []).length;
  secs.push(Number(process.hrtime.bigint() - t0) / 1e9);
}
secs.sort((a, b) => a - b);
const s = secs[Math.floor(secs.length / 2)], bytes = Buffer.byteLength(text, "utf8");
console.log(JSON.stringify({impl: "npm tiktoken (wasm)", encoding, threads: 1, bytes, documents: docs.length, tokens,
                            seconds: +s.toFixed(4), mb_per_s: +(bytes / s / 1e6).toFixed(2)}));
enc.free();
