#!/usr/bin/env bash
# Omniglot 5-way 1-shot/5-shot (MAML, FOMAML, Reptile) and sinusoid (K=5, 10)
# on a 2-core CPU budget. Usage: bash experiments/results/foundation.sh OUT_DIR
# Omniglot is read from $TFMETA_OMNIGLOT_DIR (default ../shared/data/omniglot).
set -euo pipefail
out=${1:-/tmp/tfmeta_results}
export TFMETA_OMNIGLOT_DIR=${TFMETA_OMNIGLOT_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)/shared/data/omniglot}
common=(--dataset=omniglot --n_way=5 --test_tasks=600 --val_tasks=100 --log_every=100)
run() { python -m experiments.train "$@" 2>&1 | grep -vE '^(I0000|W0000|E0000|WARNING|To enable)'; }
# 1-shot: 2000 MAML/FOMAML steps (meta-batch 32), 5000 Reptile steps (meta-batch 5);
# 5-shot: half of that. Sinusoid: 20000 steps (the paper: 70000).
for shot in 1 5; do
  if [ "$shot" = 1 ]; then steps=2000 reptile_steps=5000; else steps=1000 reptile_steps=2500; fi
  run --algorithm=maml --k_shot=$shot --num_steps=$steps --eval_every=500 "${common[@]}" --workdir="$out/maml_${shot}shot"
  run --algorithm=fomaml --k_shot=$shot --num_steps=$steps --eval_every=500 "${common[@]}" --workdir="$out/fomaml_${shot}shot"
  run --algorithm=reptile --k_shot=$shot --num_steps=$reptile_steps --eval_every=1000 "${common[@]}" --workdir="$out/reptile_${shot}shot"
done
for k in 5 10; do
  run --algorithm=maml --dataset=sinusoid --k_shot=$k --q_query=$k --num_steps=20000 \
    --log_every=5000 --eval_every=5000 --checkpoint_every=5000 --workdir="$out/maml_sinusoid_k$k"
done
python -m experiments.results.summarize "$out"
