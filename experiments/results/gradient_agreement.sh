#!/usr/bin/env bash
# Gradient Agreement against uniform task weighting, for the MAML and Reptile
# recipes of the served results (docs/results.md): Omniglot 5-way 1-shot on
# held-out characters, from one backbone trained by classification, clean and
# with 30% of the meta-training tasks' labels shuffled, 3 seeds each.
# Usage: bash experiments/results/gradient_agreement.sh OUT_DIR
# MAML_STEPS and REPTILE_STEPS set the meta-steps of each run (the recipes'
# own 3000 by default); ALGORITHMS="reptile" or "maml" runs one of the two.
# A run whose results.json exists is skipped, and a stopped run resumes from
# its last checkpoint, so the script continues where it stopped.
set -euo pipefail
out=${1:-/tmp/tfmeta_ablation}
maml_steps=${MAML_STEPS:-3000}
reptile_steps=${REPTILE_STEPS:-3000}
algorithms=${ALGORITHMS:-reptile maml}
export TFMETA_OMNIGLOT_DIR=${TFMETA_OMNIGLOT_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)/shared/data/omniglot}
backbone=$out/backbone_seed0
[ -f "$backbone/backbone.json" ] ||
  python -m experiments.embed --output_dir="$backbone" --max_steps=1200 --seed=0 --format=npz
common=(--dataset=omniglot --n_way=5 --k_shot=1 --test_tasks=600 --val_tasks=200
  --pretrained_backbone="$backbone" --report_inner_steps=)
run() {
  local workdir=$1
  shift
  [ -f "$workdir/results.json" ] ||
    python -m experiments.train "$@" "${common[@]}" --workdir="$workdir" 2>&1 |
    grep --line-buffered -vE '^(I0000|W0000|E0000|WARNING|To enable)'
}
for seed in 0 1 2; do
  for noise in 0.0 0.3; do
    for weighting in uniform gradient_agreement; do
      [[ " $algorithms " != *" reptile "* ]] ||
        run "$out/reptile_${weighting}_noise${noise}_seed${seed}" \
          --algorithm=unicorn_reptile --config=reptile_omniglot:pretrained \
          --num_steps="$reptile_steps" --eval_every=$((reptile_steps / 2)) --seed="$seed" \
          --noisy_task_fraction="$noise" --task_weighting="$weighting"
      [[ " $algorithms " != *" maml "* ]] ||
        run "$out/maml_${weighting}_noise${noise}_seed${seed}" \
          --algorithm=unicorn_maml --config=maml_omniglot:pretrained \
          --num_steps="$maml_steps" --eval_every=$((maml_steps / 2)) --seed="$seed" \
          --noisy_task_fraction="$noise" --task_weighting="$weighting"
    done
  done
done
python -m experiments.results.summarize --by_seed "$out"
