#!/usr/bin/env bash
# Gradient Agreement ablation: MAML vs MAML+GA and Reptile vs Reptile+GA on
# Omniglot 5-way 1-shot (held-out characters), clean and with 30% of the
# meta-training tasks' labels shuffled, 3 seeds each, on a 2-core CPU budget.
# Usage: bash experiments/results/gradient_agreement.sh OUT_DIR
set -euo pipefail
out=${1:-/tmp/tfmeta_ablation}
export TFMETA_OMNIGLOT_DIR=${TFMETA_OMNIGLOT_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)/shared/data/omniglot}
common=(--dataset=omniglot --n_way=5 --k_shot=1 --test_tasks=600 --val_tasks=100 --log_every=100)
run() { python -m experiments.train "$@" 2>&1 | grep -vE '^(I0000|W0000|E0000|WARNING|To enable)'; }
for seed in 0 1 2; do
  for noise in 0.0 0.3; do
    for weighting in uniform gradient_agreement; do
      run --algorithm=maml --meta_batch_size=16 --num_steps=300 --eval_every=300 --seed=$seed \
        --noisy_task_fraction=$noise --task_weighting=$weighting "${common[@]}" \
        --workdir="$out/maml_${weighting}_noise${noise}_seed${seed}"
      run --algorithm=reptile --num_steps=1000 --eval_every=1000 --seed=$seed \
        --noisy_task_fraction=$noise --task_weighting=$weighting "${common[@]}" \
        --workdir="$out/reptile_${weighting}_noise${noise}_seed${seed}"
    done
  done
done
python -m experiments.results.summarize --by_seed "$out"
