#!/usr/bin/env bash
# The main job: what one decode layer costs, and what the paper's split buys, for the
# paper's latency configurations (OPT-6.7B and OPT-13B, batch 64, context prompt+gen).
set -eu
kvpr=${1:-build/kvpr}
"$kvpr" hw list
echo
for model in OPT-6.7B OPT-13B; do
    for hw in paper-a100 a100-40gb-pcie4 h100-pcie; do
        "$kvpr" cost --model "$model" --hw "$hw" --batch 64 --ctx 640
        echo
    done
done
"$kvpr" cost --model Llama-3-8B --hw a100-40gb-pcie4 --batch 64 --ctx 640
