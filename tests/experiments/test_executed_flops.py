"""The FLOP count against what a step executes: oneDNN's log read by hand,
then a real second-order step (no assertion on timings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from experiments.bench import executed, flops
from tests.helpers import REPO

CONV = "onednn_verbose,v1,primitive,exec,cpu,convolution,brg_conv_fwd:avx512_core,{prop},src:f32 dst:f32,attr-scratchpad:user,alg:convolution_direct,{desc},0.01"
GEMM = "onednn_verbose,v1,primitive,exec,cpu,gemm_api,,undef,src_f32 wei_f32 dst_f32,,,{desc},0.01"
INNER = "onednn_verbose,v1,primitive,exec,cpu,inner_product,gemm:jit,forward_training,src:f32,,,{desc},0.01"
MARK = CONV.format(prop="forward_training", desc=executed.MARKER_DESCRIPTOR)


def test_descriptors_by_hand():
    # 5 images, 14x14 output, 64 -> 64 channels, 3x3: 5*14*14*64*64*9.
    conv = "mb5_ic64oc64_ih14oh14kh3sh1dh0ph1_iw14ow14kw3sw1dw0pw1"
    assert executed.convolution_multiply_adds(conv) == 5 * 196 * 64 * 64 * 9
    # Two groups of 8 -> 4 channels, 1x1 over 3x2.
    grouped = "g2mb1_ic16oc8_ih3oh3kh1sh1dh0ph0_iw2ow2kw1sw1dw0pw0"
    assert executed.convolution_multiply_adds(grouped) == 1 * 8 * 8 * 6
    assert executed.matmul_multiply_adds("9x3920:3920x9") == 9 * 3920 * 9
    assert executed.matmul_multiply_adds("5x1x5:5x5x1") == 5 * 1 * 5 * 1
    assert executed.inner_product_multiply_adds("mb5ic256oc5") == 5 * 256 * 5


def test_only_the_lines_between_the_markers_count():
    conv = "mb2_ic1oc4_ih4oh4kh3sh1dh0ph1_iw4ow4kw3sw1dw0pw1"  # 2*16*4*9 = 1152
    log = "\n".join(
        [
            CONV.format(prop="forward_training", desc=conv),  # the first call
            f"onednn_verbose,v1,primitive,create:cache_miss,cpu,convolution,x,y,z,{conv}",
            MARK,
            CONV.format(prop="forward_training", desc=conv),
            CONV.format(prop="backward_weights", desc=conv),
            "onednn_verbose,v1,primitive,exec,cpu,reorder,simple:any,undef,a,,,4x4,0.01",
            GEMM.format(desc="3x4:4x5"),
            INNER.format(desc="mb2ic8oc3"),
            "python printed this line",
            MARK,
            CONV.format(prop="backward_data", desc=conv),  # after the step
        ]
    )
    assert executed.step_flops(log) == {
        "convolution forward_training": 2 * 1152,
        "convolution backward_weights": 2 * 1152,
        "matmul": 2 * (3 * 4 * 5 + 2 * 8 * 3),
    }
    primitives = executed.step_primitives(log)
    problem = "ic1oc4_ih4oh4kh3sh1dh0ph1_iw4ow4kw3sw1dw0pw1"
    assert primitives[("convolution backward_weights", problem)] == {
        "flops": 2 * 1152,
        "ms": 0.01,
        "calls": 1,
    }
    assert primitives[("reorder", "")] == {"flops": 0, "ms": 0.01, "calls": 1}
    assert primitives[("matmul", "ic8oc3")]["calls"] == 1
    assert len(primitives) == 5
    with pytest.raises(
        ValueError, match="expected 2 marker convolutions in the log, found 1"
    ):
        executed.step_flops(log.replace(MARK, "", 1))


def test_a_second_order_step_executes_the_convolutions_counted(tmp_path):
    """Second-order MAML, 2 inner steps, and Prototypical Networks: the
    convolutions and matmuls oneDNN runs in one step are the count, within
    the few it leaves out."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    out = tmp_path / "flops.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.benchmark",
            "--mode=flops",
            "--algorithms=maml,protonet",
            "--n_way=3",
            "--meta_batch_size=1",
            "--inner_steps=2",
            "--q_query=2",
            f"--output_json={out}",
        ],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    if not figures["maml"]["onednn"]:
        pytest.skip("oneDNN is off in this TensorFlow: no log of executed convolutions")
    assert figures["maml"]["counted_flops"] == flops.maml_step_flops(1, 3, 1, 2, 2)
    assert figures["protonet"]["counted_flops"] == flops.protonet_step_flops(1, 3, 1, 2)
    for algorithm in ("maml", "protonet"):
        # The count leaves out what the pooled first block adds for its
        # moments (a 9-channel patch convolution and their covariance) and
        # the prototypes' distances: a few tenths of a percent.
        figure = figures[algorithm]
        executed_flops = sum(figure["executed_flops"].values())
        assert 1 <= executed_flops / figure["counted_flops"] < 1.01, (algorithm, figure)
    assert "maml: counted" in done.stdout
    assert "  oneDNN's own time in the step's primitives: " in done.stdout


def test_without_onednn_the_report_says_so_in_one_line():
    result = {"algorithm": "maml", "onednn": False, "counted_flops": 1}
    assert executed.report(result, "") == [
        "maml: oneDNN is off here, so no log of executed primitives to read"
    ]
