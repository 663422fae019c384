"""oneDNN's log read by hand: the FLOPs a step executes (the real step
against the count: tests/experiments/test_benchmark.py)."""

from __future__ import annotations

import pytest

from experiments.bench import executed

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


def test_without_onednn_the_report_says_so_in_one_line():
    result = {"algorithm": "maml", "onednn": False, "counted_flops": 1}
    assert executed.report(result, "") == [
        "maml: oneDNN is off here, so no log of executed primitives to read"
    ]
