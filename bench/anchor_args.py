"""The PyTorch anchor's arguments for a lingua config: python3 bench/anchor_args.py config.yaml.
A config with model.ffn=stem maps to --stem half (stem_layers 0, 2, 4, ...) or --stem all; other
STEM layouts print SKIP (the anchor has no such layout)."""
import sys
import yaml

c = yaml.safe_load(open(sys.argv[1]))
m, d = c['model'], c['data']
stem = ''
if m.get('ffn') == 'stem':
    n = m['n_layers']
    layers = m.get('stem_layers', list(range(1, n)))
    stem = ' --stem half' if layers == list(range(0, n, 2)) else ' --stem all' if layers == list(range(n)) else ' SKIP'
print(f"--dim {m['dim']} --layers {m['n_layers']} --heads {m['n_heads']} --kv {m.get('n_kv_heads', m['n_heads'])} "
      f"--vocab {m['vocab_size']} --seq {d['seq_len']} --bsz {d['batch_size']}{stem}")
