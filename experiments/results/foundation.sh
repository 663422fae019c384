#!/usr/bin/env bash
# Omniglot 5-way 1-shot/5-shot (MAML, FOMAML, Reptile) and sinusoid (K=5, 10)
# on a 2-core CPU budget. Usage: bash experiments/results/foundation.sh OUT_DIR
# Omniglot is read from $TFMETA_OMNIGLOT_DIR (default ../shared/data/omniglot).
set -euo pipefail
out=${1:-/tmp/tfmeta_results}
export TFMETA_OMNIGLOT_DIR=${TFMETA_OMNIGLOT_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)/shared/data/omniglot}
common=(--dataset=omniglot --n_way=5 --test_tasks=600 --val_tasks=100 --log_every=100)
run() { python -m experiments.train "$@" 2>&1 | grep -vE '^(I0000|W0000|E0000|WARNING|To enable)'; }
for shot in 1 5; do
  run --algorithm=maml --k_shot=$shot --num_steps=2000 --eval_every=500 "${common[@]}" --workdir="$out/maml_${shot}shot"
  run --algorithm=fomaml --k_shot=$shot --num_steps=2000 --eval_every=500 "${common[@]}" --workdir="$out/fomaml_${shot}shot"
  run --algorithm=reptile --k_shot=$shot --num_steps=5000 --eval_every=1000 "${common[@]}" --workdir="$out/reptile_${shot}shot"
done
for k in 5 10; do
  for algorithm in maml fomaml; do
    run --algorithm=$algorithm --dataset=sinusoid --k_shot=$k --q_query=$k --num_steps=70000 \
      --log_every=5000 --eval_every=10000 --checkpoint_every=10000 --workdir="$out/${algorithm}_sinusoid_k$k"
  done
done
python -m experiments.results.summarize "$out"
