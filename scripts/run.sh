#!/usr/bin/env bash
# The main job: the paper's experiments and the link what-if, each printing its table (the
# paper's numbers beside ours) and drawing its figures into plots/; every run lands in results.db.
set -eu
kvpr=${1:-build/kvpr}
for e in paper-latency paper-throughput paper-batch paper-breakdown paper-fig9 whatif-links whatif-servers; do
    "$kvpr" run "$e"
    echo
done
echo "figures: plots/*.png and plots/*.svg; runs: results.db"
echo
"$kvpr" validate --quiet
