#!/usr/bin/env bash
# The main job. For the paper's headline configuration (OPT-6.7B, A100 40GB on PCIe 4.0, batch 64,
# prompt 128, generation 128, latency mode): what each scheduler chooses, what the simulator says
# plain offloading and KVPR at that split take, and then how far each scheduler is from the best
# split over the validation grid. Writes results.db and plots/out/.
set -eu
kvpr=${1:-build/kvpr}
cfg="--model OPT-6.7B --hw a100-40gb-pcie4 --batch 64 --prompt 128 --gen 128"
echo "== hardware profiles (kvpr hw list)"
"$kvpr" hw list
for s in paper pipelined dynamic; do
    echo
    echo "== kvpr plan $cfg --scheduler $s"
    "$kvpr" plan $cfg --scheduler $s
done
split=$("$kvpr" plan $cfg --scheduler pipelined --json | sed -n 's/^ *"split": \([0-9]*\),$/\1/p')
echo
echo "== kvpr sim $cfg --policy offload"
"$kvpr" sim $cfg --policy offload
echo
echo "== kvpr sim $cfg --policy kvpr --split $split --trace plots/out/kvpr-trace.json"
mkdir -p plots/out
"$kvpr" sim $cfg --policy kvpr --split "$split" --trace plots/out/kvpr-trace.json
echo
echo "== GQA: kvpr plan --model Llama-3-8B (recomputation moves more bytes than it saves)"
"$kvpr" plan --model Llama-3-8B --hw a100-40gb-pcie4 --batch 64 --prompt 512 --gen 32
echo
echo "== kvpr validate (every split simulated on the grid of experiments/validate-grid.json)"
"$kvpr" validate --quiet
