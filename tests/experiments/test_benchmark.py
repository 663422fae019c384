"""The benchmark's worker and its FLOP count (no assertion on timings)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys

import pytest

from experiments.bench import flops
from tests.helpers import REPO, fresh_python

# Not passed on to the worker: it runs with its own defaults (oneDNN, native
# kernels, malloc arenas), whatever the environment of the tests says.
NOT_INHERITED = (
    "TF_ENABLE_ONEDNN_OPTS",
    "TFMETA_NATIVE_KERNELS",
    "TF_CPU_ALLOCATOR_USE_BFC",
    "MALLOC_ARENA_MAX",
)
FIELDS = (
    "ms_per_step_median",
    "compile_s",
    "first_call_s",
    "peak_rss_mib",
    "built_rss_mib",
    "rss_growth_mib",
)


def _run(command, extra_env=None):
    """Runs ``command`` from the checkout; asserts it succeeds."""
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env.update(extra_env or {})
    done = subprocess.run(
        command,
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _one_json_line(command, extra_env=None):
    """Runs ``command`` from the checkout; its one JSON line, parsed."""
    done = _run(command, extra_env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, done.stdout
    return json.loads(lines[0])


@pytest.mark.parametrize(
    "algorithm,extra",
    [
        ("fomaml", []),
        (
            "maml",
            [
                "--recompute",
                "--inner_steps=2",
                "--task_execution=map_fn",
                "--nounroll_inner_loop",
            ],
        ),
        ("leo", ["--malloc_arenas=glibc"]),
    ],
)
def test_worker_prints_one_json_line_of_positive_figures(algorithm, extra):
    command = [sys.executable, "-m", "experiments.benchmark", f"--worker={algorithm}"]
    command += ["--meta_batch_size=2", "--filters=8", "--steps=1", "--threads=1"]
    command += ["--leo_embedding_dim=16", *extra]
    extra_env = {"TF_CPP_MIN_LOG_LEVEL": "2"}
    if algorithm == "maml":  # as the memory mode runs its workers
        extra_env["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
    result = _one_json_line(command, extra_env)
    assert (result["impl"], result["algorithm"], result["xla"]) == (
        "tfmeta",
        algorithm,
        "off",
    )
    assert result["recompute"] == ("--recompute" in extra)
    assert result["inner_steps"] == (2 if "--inner_steps=2" in extra else 1)
    assert result["malloc_arenas"] == (
        "glibc" if "--malloc_arenas=glibc" in extra else len(os.sched_getaffinity(0))
    )
    assert (result["meta_batch_size"], result["filters"], result["steps"]) == (2, 8, 1)
    for field in FIELDS:
        value = result[field]
        assert isinstance(value, (int, float)) and math.isfinite(value), (field, value)
        if field != "rss_growth_mib":  # growth can be 0 when nothing new is touched
            assert value > 0, (field, value)
        else:
            assert value >= 0, (field, value)
    assert result["peak_rss_mib"] >= result["built_rss_mib"]
    # compile time: the first call less a step
    assert result["compile_s"] < result["first_call_s"]
    assert result["onednn"] is True
    assert result["native_kernels"] is True  # built (or loaded) before timing
    assert result["unroll_inner_loop"] == ("--nounroll_inner_loop" not in extra)
    assert result["task_execution"] == ("map_fn" if algorithm == "maml" else "loop")
    if algorithm == "maml":
        # The allocator's peak of live tensors: at least the 2 tasks' inputs.
        assert result["tensor_peak_mib"] > 0
    else:
        assert result["tensor_peak_mib"] is None


def test_each_algorithm_gets_the_settings_it_has_and_its_own_outer_update():
    from experiments.bench import learners
    from experiments.bench.settings import Settings

    settings = Settings(
        task_execution="map_fn", recompute=True, unroll_inner_loop=False
    )
    resolved = {
        name: learners.resolve(name, settings)
        for name in ("maml", "fomaml", "reptile", "leo")
    }
    maml, fomaml = resolved["maml"].config, resolved["fomaml"].config
    reptile, leo = resolved["reptile"].config, resolved["leo"].config
    # The settings each declares; the task's shape for all.
    assert (maml["recompute"], maml["task_execution"]) == (True, "map_fn")
    assert maml["unroll_inner_loop"] is False
    assert fomaml["recompute"] is False and fomaml["task_execution"] == "map_fn"
    assert resolved["fomaml"].notes == [
        "recompute=True is not one of its settings: ignored"
    ]
    assert leo["task_execution"] == "loop" and leo["unroll_inner_loop"] is True
    assert any("runs loop" in note for note in resolved["leo"].notes)
    for config in (maml, fomaml, reptile, leo):
        assert (config["n_way"], config["meta_batch_size"], config["inner_steps"]) == (
            5,
            32,
            1,
        )
    # alpha: each one's own unless given; the outer update of its own config.
    assert (maml["inner_lr"], reptile["inner_lr"], leo["inner_lr"]) == (0.4, 0.4, 1.0)
    assert (maml["outer_optimizer"], maml["outer_lr"]) == ("adam", 1e-3)
    assert (reptile["outer_optimizer"], reptile["outer_lr"]) == ("annealed_sgd", 1.0)
    assert (leo["gradient_clip_value"], leo["num_latents"]) == (0.1, 64)
    assert reptile["inner_optimizer"] == "sgd" and reptile["inner_batch_size"] is None
    # Images for the data's default network, embedding vectors for LEO's model.
    assert resolved["maml"].input_shape == (28, 28, 1)
    assert resolved["leo"].input_shape == (256,)


def test_a_registered_algorithm_gets_a_row_without_an_edit(monkeypatch):

    from experiments.bench import learners
    from experiments.bench.settings import Settings
    from tfmeta import configs
    from tfmeta.algorithms import maml, registry

    for name in ("first_order_copy", "configless"):
        algorithm = dataclasses.replace(maml.FOMAML_ALGORITHM, name=name)
        monkeypatch.setitem(registry.ALGORITHMS, name, algorithm)
    monkeypatch.setitem(
        configs.CONFIGS, ("first_order_copy", "omniglot"), "maml_omniglot"
    )
    entries = {e["algorithm"]: e for e in learners.plan([], Settings())["algorithms"]}
    assert entries["first_order_copy"]["skip"] is None
    assert entries["first_order_copy"]["description"].startswith(
        "first_order_copy: max-pool conv4 (64 filters) on random 28x28x1 images"
    )
    assert "recompute" not in entries["first_order_copy"]["settings"]
    assert "no config on omniglot or embeddings" in entries["configless"]["skip"]
    refused = learners.plan(["maml"], Settings(recompute_steps=1))
    assert "recompute_steps needs recompute" in refused["error"]


def test_cpu_peak_from_cpuinfo():
    avx2 = "processor : 0\ncpu MHz : 2500.000\nflags : fpu sse2 avx avx2 fma\n"
    assert flops.cpu_peak_gflops(avx2, cores=2) == pytest.approx(160.0)
    avx512 = avx2.replace("fma", "fma avx512f")
    assert flops.cpu_peak_gflops(avx512, cores=1) == pytest.approx(160.0)
    assert flops.cpu_peak_gflops("flags : sse2\ncpu MHz : 1000\n", cores=4) == 32.0
    assert flops.cpu_peak_gflops("flags : avx2 fma\n", cores=2) is None
    # Zen 4 (AMD family 25) runs AVX-512 on 256-bit FMA pipes: 32 per cycle;
    # Zen 5 (family 26) and Intel's AVX-512 cores: 64.
    amd = "vendor_id : AuthenticAMD\ncpu family : {}\n" + avx512
    assert flops.cpu_peak_gflops(amd.format(25), cores=2) == pytest.approx(160.0)
    assert flops.cpu_peak_gflops(amd.format(26), cores=2) == pytest.approx(320.0)
    intel = "vendor_id : GenuineIntel\ncpu family : 6\n" + avx512
    assert flops.cpu_peak_gflops(intel, cores=2) == pytest.approx(320.0)


def test_the_peak_is_the_highest_of_the_listed_and_measured_rates():
    assert flops.peak_gflops(160.0, 210.0) == 210.0
    assert flops.peak_gflops(320.0, 210.0) == 320.0
    assert flops.peak_gflops(None, 210.0) == 210.0
    assert flops.peak_gflops(160.0, None) == 160.0
    assert flops.peak_gflops(None, None) is None
    # The FMA loop above both (an Intel running AVX-512 above its listed clock).
    assert flops.peak_gflops(269.0, 280.0, 350.0) == 350.0
    assert flops.peak_gflops(269.0, 280.0, 100.0) == 280.0
    assert flops.peak_gflops(None, None, 350.0) == 350.0
    assert flops.peak_source(269.0, 280.0, 350.0) == (350.0, "the FMA loop's rate")
    assert flops.peak_source(269.0, 280.0, None) == (280.0, "the matmul's rate")
    assert flops.peak_source(269.0, None, 100.0) == (269.0, "the listed peak")
    assert flops.peak_source(None, None, None) is None
    assert flops.matmul_flops(2048) == 2 * 2048**3


@pytest.mark.skipif(shutil.which("g++") is None, reason="no C++ compiler (g++)")
def test_fma_loop_builds_and_reports_every_core(monkeypatch):
    from experiments.bench import roof

    monkeypatch.delenv("CXX", raising=False)
    result = roof.measure_fma(seconds=0.05)
    assert result["fma_threads"] == len(os.sched_getaffinity(0))
    assert 0 < result["fma_gflops"] < 1e6


def test_an_fma_loop_that_cannot_build_is_one_note_and_leaves_the_peak(
    monkeypatch, capsys
):
    from experiments.bench import driver, roof

    monkeypatch.setenv("CXX", "/nonexistent/g++")
    with pytest.raises(RuntimeError, match="^/nonexistent/g\\+\\+: No such file"):
        roof.measure_fma(seconds=0.05)
    fma, note = driver.fma_run(None)
    assert fma is None
    assert note.startswith("the FMA loop is not timed (/nonexistent/g++: No such")
    # Later rounds neither retry nor print it again.
    assert driver.fma_run(note) == (None, note)
    assert capsys.readouterr().out.splitlines() == [note]


def test_matmul_prints_one_json_line_of_its_rate():
    result = _one_json_line([sys.executable, "-m", "experiments.benchmark", "--matmul"])
    assert result["matmul_n"] == flops.MATMUL_SIZE
    assert 0 < result["matmul_gflops_median"] <= result["matmul_gflops_best"]


def test_forward_multiply_adds_max_pool_by_hand():
    # 5x5x1 -> conv 2 filters: 5*5*2*1*9 = 450 -> pool (ceil) 3x3
    # -> conv: 3*3*2*2*9 = 324 -> pool 2x2 -> flatten 8 -> dense 8*3 = 24.
    count = flops.forward_multiply_adds(3, filters=2, depth=2, input_shape=(5, 5, 1))
    assert count == 450 + 324 + 24


def test_forward_multiply_adds_stride_by_hand():
    # 5x5x1 -> stride-2 conv to 3x3: 3*3*2*1*9 = 162 -> 2x2: 2*2*2*2*9 = 144
    # -> global mean, 2 features -> dense 2*3 = 6.
    count = flops.forward_multiply_adds(
        3, filters=2, depth=2, input_shape=(5, 5, 1), pooling="stride"
    )
    assert count == 162 + 144 + 6


def test_omniglot_maml_step_flops_by_hand():
    # 28x28: 28*28*64*9, then 14x14, 7x7, 4x4 with 64 -> 64 channels; 2*2*64 -> 5.
    per_example = (
        28 * 28 * 64 * 9 + (14 * 14 + 7 * 7 + 4 * 4) * 64 * 64 * 9 + 2 * 2 * 64 * 5
    )
    assert per_example == 10_074_368
    assert flops.forward_multiply_adds(5) == per_example
    first = 28 * 28 * 64 * 9
    # Each support example: 9 forwards' worth per inner step, the first layer
    # 4 (no input gradient, in the inner step or its Hessian-vector product);
    # each query: 3, the first layer 2. 32 tasks, 2 FLOPs per multiply-add.
    support, query = 9 * per_example - 5 * first, 3 * per_example - first
    step = flops.maml_step_flops(32, n_way=5, k_shot=1, q_query=1, inner_steps=1)
    assert step == 32 * (5 * support + 5 * query) * 2 == 37_818_531_840
    # 20-way, 16 tasks, 5 inner steps: ~302.1 GFLOP (PyTorch's FlopCounterMode
    # finds 303.5 in the yardstick's step, which also computes a few unused
    # first-layer input gradients).
    per_example_20 = per_example + 2 * 2 * 64 * 15
    twenty = flops.maml_step_flops(16, n_way=20, k_shot=1, q_query=1, inner_steps=5)
    assert twenty == 16 * 20 * 2 * (
        5 * (9 * per_example_20 - 5 * first) + 3 * per_example_20 - first
    )
    assert round(twenty / 1e9, 1) == 302.1


@pytest.mark.parametrize("pooling", ["max", "stride"])
def test_forward_multiply_adds_matches_the_conv4_model(pooling):
    from tfmeta.models import conv4

    model = conv4(3, input_shape=(9, 9, 1), filters=4, depth=3, pooling=pooling, seed=0)
    from_model = 0
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            _, *spatial, _ = layer.output.shape
            from_model += math.prod(spatial) * math.prod(layer.kernel.shape)
    assert (
        flops.forward_multiply_adds(
            3, filters=4, depth=3, input_shape=(9, 9, 1), pooling=pooling
        )
        == from_model
    )


OWN_PEAK = pytest.mark.skipif(
    not os.path.isfile("/proc/self/status"),
    reason="no /proc/self/status: peak RSS falls back to ru_maxrss",
)
MIB = 2**20


@OWN_PEAK
def test_peak_rss_counts_what_the_process_allocated():
    code = (
        "from experiments.bench import memory\n"
        f"block = b'\\1' * {64 * MIB}  # written: resident\n"
        "print(memory.peak_rss_source(), memory.peak_rss_mib())\n"
    )
    source, peak = fresh_python(code)
    assert source == "VmHWM" and float(peak) >= 64


@OWN_PEAK
def test_the_wrapper_reports_the_script_own_peak_not_its_parent(tmp_path):
    # A parent that holds 256 MiB runs, through the wrapper, a script that
    # holds 32 MiB: the script's peak is at least its 32 MiB and below the
    # parent's 256 (ru_maxrss would start from the parent's on Linux).
    from experiments.bench import memory

    script = tmp_path / "allocate.py"
    script.write_text(
        "import json, resource, sys\n"
        f"block = b'\\1' * (int(sys.argv[1]) * {MIB})\n"
        "maximum = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print('allocated')\n"
        "print(json.dumps({'impl': 'allocate', 'peak_rss_mib': maximum}))\n"
    )
    parent = (
        "import subprocess, sys\n"
        f"held = b'\\1' * {256 * MIB}\n"
        f"subprocess.run([sys.executable, {memory.__file__!r}, {str(script)!r}, '32'], "
        "check=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", parent], check=True, capture_output=True, text=True
    )
    printed, line = done.stdout.splitlines()
    result = json.loads(line)
    assert printed == "allocated"
    assert (result["impl"], result["peak_rss_source"]) == ("allocate", "VmHWM")
    assert 32 <= result["peak_rss_mib"] < 256
    assert "ru_maxrss_mib" in result  # the script's own figure, kept


@OWN_PEAK
def test_the_wrapper_reports_an_import_alone():
    from experiments.bench import memory

    command = [sys.executable, memory.__file__, "--import", "json"]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout)
    assert (result["import"], result["peak_rss_source"]) == ("json", "VmHWM")
    assert result["peak_rss_mib"] > 0


def test_a_round_runs_each_algorithm_then_its_yardsticks(capsys):
    from experiments.bench import driver
    from experiments.bench.settings import Options, Settings
    from experiments.bench.yardstick import YARDSTICKS

    (order_2,), (eager, compiled) = YARDSTICKS["maml"], YARDSTICKS["protonet"]
    planned = [{"algorithm": name} for name in ("maml", "reptile", "protonet")]
    options = Options(xla=("off", "on"), torch_python="python")
    jobs = driver.schedule(planned, options, Settings(meta_batch_size=1))
    assert jobs == [
        ("tfmeta", ("maml", "off")),
        ("tfmeta", ("maml", "on")),
        ("yardstick", order_2),
        ("tfmeta", ("reptile", "off")),
        ("tfmeta", ("reptile", "on")),
        ("tfmeta", ("protonet", "off")),
        ("tfmeta", ("protonet", "on")),
        ("yardstick", eager),
        ("yardstick", compiled),
    ]
    assert capsys.readouterr().out == ""
    # Meta-batch 32 (every algorithm by default): ProtoNet's yardsticks are
    # left out, the reason printed once.
    jobs = driver.schedule(planned, options, Settings(meta_batch_size=32))
    assert [key for kind, key in jobs if kind == "yardstick"] == [order_2]
    skipped = (
        "protonet's yardstick skipped: --meta_batch_size=32: the protonet "
        "yardstick runs one episode per step: pass --meta_batch_size=1"
    )
    assert capsys.readouterr().out.splitlines() == [skipped]
    no_torch = driver.schedule(planned, Options(xla=("off",)), Settings())
    assert [kind for kind, _ in no_torch] == ["tfmeta"] * 3


def test_each_yardstick_gets_the_flags_its_script_has():
    from experiments.bench.settings import Settings
    from experiments.bench.yardstick import YARDSTICKS

    settings = Settings(n_way=60, q_query=5, meta_batch_size=1, steps=3)
    shape = ["--n_way=60", "--k_shot=1", "--q_query=5", "--steps=3", "--threads=0"]
    eager, compiled = YARDSTICKS["protonet"]
    assert eager.arguments(settings, None) == shape
    assert compiled.arguments(settings, None) == ["--compile", *shape]
    (order_1,) = YARDSTICKS["fomaml"]
    assert order_1.arguments(settings, 0.4) == [
        "--order=1",
        *shape,
        "--meta_batch=1",
        "--inner_steps=1",
        "--inner_lr=0.4",
    ]
    assert (eager.name, compiled.name) == (
        "protonet (eager)",
        "protonet (torch.compile)",
    )


def test_protonet_named_beside_its_yardstick_needs_meta_batch_1(tmp_path):
    from experiments.bench.settings import Options, Settings

    script = tmp_path / "reference.py"
    script.write_text("")
    options = Options(
        algorithms=("maml", "protonet"),
        torch_python=sys.executable,
        yardstick=str(script),
        protonet_yardstick=str(script),
    )
    with pytest.raises(ValueError) as refused:
        options.check(Settings(meta_batch_size=32))
    assert str(refused.value) == (
        "--meta_batch_size=32: the protonet yardstick runs one episode per step: "
        "pass --meta_batch_size=1, or drop --torch_python to time protonet without it"
    )
    options.check(Settings(meta_batch_size=1))
    # Every algorithm by default: accepted (the driver leaves its yardstick out).
    dataclasses.replace(options, algorithms=()).check(Settings(meta_batch_size=32))
    # Only the scripts of the algorithms asked for must exist.
    absent = str(tmp_path / "absent.py")
    dataclasses.replace(options, algorithms=("protonet",), yardstick=absent).check(
        Settings(meta_batch_size=1)
    )
    with pytest.raises(ValueError, match=f"--protonet_yardstick={absent} does not"):
        dataclasses.replace(options, protonet_yardstick=absent).check(
            Settings(meta_batch_size=1)
        )


def _tfmeta_result(algorithm: str, ms: float, **extra) -> dict:
    return {
        "impl": "tfmeta",
        "algorithm": algorithm,
        "xla": "off",
        "ms_per_step_median": ms,
        "compile_s": 1.5,
        "peak_rss_mib": 900.0,
        "rss_growth_mib": 80.0,
        **extra,
    }


def _yardstick_result(stick, ms: float) -> dict:
    return {
        "impl": "torch-reference",
        "torch": "2.13.0+cpu",
        "yardstick": stick.name,
        "ms_per_step_median": ms,
        "peak_rss_mib": 300.0,
        "rss_growth_mib": 90.0,
    }


def _protonet_rounds(tfmeta_ms, eager_ms, compiled_ms):
    """Jobs and results of one protonet row and its two yardsticks."""
    from experiments.bench.yardstick import YARDSTICKS

    eager, compiled = YARDSTICKS["protonet"]
    jobs = [("tfmeta", ("protonet", "off")), ("yardstick", eager)]
    jobs.append(("yardstick", compiled))
    results = {
        jobs[0]: [_tfmeta_result("protonet", ms) for ms in tfmeta_ms],
        jobs[1]: [_yardstick_result(eager, ms) for ms in eager_ms],
        jobs[2]: [_yardstick_result(compiled, ms) for ms in compiled_ms],
    }
    return jobs, results


@pytest.mark.parametrize("faster", ["eager", "torch.compile"])
def test_protonet_ratio_is_to_the_faster_yardstick_and_both_are_printed(faster):
    from experiments.bench import report
    from experiments.bench.settings import Settings

    # Medians over three rounds: tfmeta 100, eager 300 or 240, compiled 240 or 300.
    slow, fast = [280.0, 300.0, 900.0], [240.0, 230.0, 250.0]
    eager_ms, compiled_ms = (fast, slow) if faster == "eager" else (slow, fast)
    jobs, results = _protonet_rounds([90.0, 100.0, 120.0], eager_ms, compiled_ms)
    rows = report.speed_rows(jobs, results, Settings(meta_batch_size=1))
    tfmeta, eager, compiled = rows
    assert tfmeta["ratio"] == pytest.approx(100.0 / 240.0)
    assert tfmeta["ratio_to"] == f"protonet ({faster})"
    assert (eager["ms_per_step_median"], compiled["ms_per_step_median"]) == (
        (240.0, 300.0) if faster == "eager" else (300.0, 240.0)
    )
    lines = report.speed_table(rows).splitlines()
    assert lines[2] == "| tfmeta | protonet | off | 100.0 | 1.5 | 900 | 80 | 0.42 |"
    assert lines[3].startswith("| PyTorch 2.13.0+cpu | protonet (eager) | - | ")
    assert lines[4].startswith("| PyTorch 2.13.0+cpu | protonet (torch.compile) | - | ")
    assert lines[3].endswith(" | 300 | 90 | - |")


def test_forward_multiply_adds_max_pool_rounding_down_by_hand():
    # 5x5x1 -> conv 2 filters: 5*5*2*1*9 = 450 -> pool (floor) 2x2
    # -> conv: 2*2*2*2*9 = 144 -> pool 1x1 -> flatten 2 -> dense 2*3 = 6.
    count = flops.forward_multiply_adds(
        3, filters=2, depth=2, input_shape=(5, 5, 1), ceil_mode=False
    )
    assert count == 450 + 144 + 6


def test_omniglot_protonet_step_flops_by_hand():
    # The embedding (no head): 28x28 from 1 channel, then 14x14, 7x7 and 4x4
    # (3x3 where pooling rounds down) from 64 to 64 channels.
    ceil = 28 * 28 * 64 * 9 + (14 * 14 + 7 * 7 + 4 * 4) * 64 * 64 * 9
    floor = 28 * 28 * 64 * 9 + (14 * 14 + 7 * 7 + 3 * 3) * 64 * 64 * 9
    assert (ceil, floor) == (10_073_088, 9_815_040)
    # 60-way 1-shot 5 queries: 360 images, forward + backward 3 forwards
    # less the first layer's input gradient, 2 FLOPs per multiply-add: ~21.43
    # GFLOP (~20.87 rounding down).
    first = 28 * 28 * 64 * 9
    step = flops.protonet_step_flops(1, n_way=60, k_shot=1, q_query=5)
    assert step == 360 * 2 * (3 * ceil - first) == 21_432_729_600
    assert flops.protonet_step_flops(1, 60, 1, 5, ceil_mode=False) == 360 * 2 * (
        3 * floor - first
    )
    # A meta-batch of episodes: that many times one.
    assert flops.protonet_step_flops(4, 60, 1, 5) == 4 * step


def test_protonet_rows_get_their_network_flops_and_share_of_peak(monkeypatch):
    from experiments.bench import report
    from experiments.bench.settings import Settings

    monkeypatch.setattr(flops, "cpu_peak_gflops", lambda: 100.0)
    settings = Settings(meta_batch_size=1, n_way=60, q_query=5)
    jobs, results = _protonet_rounds([500.0], [2000.0], [1000.0])
    rows = report.speed_rows(jobs, results, settings)
    ceil = flops.protonet_step_flops(1, 60, 1, 5)
    floor = flops.protonet_step_flops(1, 60, 1, 5, ceil_mode=False)
    assert [row["flops_per_step"] for row in rows] == [ceil, floor, floor]
    tfmeta, _, compiled = rows
    assert tfmeta["gflops_per_s"] == pytest.approx(ceil / 0.5 / 1e9)
    assert compiled["gflops_per_s"] == pytest.approx(floor / 1.0 / 1e9)
    lines = report.flop_notes(rows, settings)
    assert lines[0].startswith(
        "Prototypical Networks: ~21.43 GFLOP per step (1 episode of N*(K+Q) = "
        "360 images)"
    )
    assert "~20.88 GFLOP for its rows" in lines[0]
    assert lines[1].startswith("CPU FP32 peak ~100 GFLOP/s listed")
    assert lines[2:] == [
        "  tfmeta protonet xla=off: 42.87 GFLOP/s achieved, 43% of peak",
        "  PyTorch 2.13.0+cpu protonet (eager): 10.44 GFLOP/s achieved, 10% of peak",
        (
            "  PyTorch 2.13.0+cpu protonet (torch.compile): 20.88 GFLOP/s "
            "achieved, 21% of peak"
        ),
    ]
    assert tfmeta["fraction_of_peak"] == pytest.approx(ceil / 0.5 / 1e9 / 100)
    # A matmul above the listed peak: the shares are of the matmul's rate.
    lines = report.flop_notes(rows, settings, matmul_gflops=200.0)
    assert lines[2:4] == [
        "a 2048x2048 float32 matmul reached 200 GFLOP/s (median over rounds)",
        "shares are of the highest, the matmul's rate: 200 GFLOP/s",
    ]
    assert lines[4] == "  tfmeta protonet xla=off: 42.87 GFLOP/s achieved, 21% of peak"
    assert tfmeta["fraction_of_peak"] == pytest.approx(ceil / 0.5 / 1e9 / 200)
    # Below it: the listed peak stays, the matmul's rate is printed beside it.
    lines = report.flop_notes(rows, settings, matmul_gflops=80.0)
    assert lines[2:4] == [
        "a 2048x2048 float32 matmul reached 80 GFLOP/s (median over rounds)",
        "shares are of the highest, the listed peak: 100 GFLOP/s",
    ]
    assert lines[4].endswith("43% of peak")
    # The FMA loop above both: the shares are of its rate.
    lines = report.flop_notes(rows, settings, matmul_gflops=80.0, fma_gflops=400.0)
    assert lines[3:5] == [
        (
            "fused multiply-adds on registers, one thread per core, reached "
            "400 GFLOP/s (best over rounds)"
        ),
        "shares are of the highest, the FMA loop's rate: 400 GFLOP/s",
    ]
    assert lines[5] == "  tfmeta protonet xla=off: 42.87 GFLOP/s achieved, 11% of peak"
    assert tfmeta["fraction_of_peak"] == pytest.approx(ceil / 0.5 / 1e9 / 400)
    # Algorithms not counted (FOMAML here) get no FLOP figures.
    assert flops.step_flops("fomaml", settings) is None


def test_a_timed_training_loop_gets_a_row_under_its_compiled_step():
    from experiments.bench import report
    from experiments.bench.settings import Settings

    jobs, results = _protonet_rounds([90.0, 100.0, 120.0], [300.0], [240.0])
    loops = [130.0, 104.0, 110.0]  # median 110 over the compiled step's 100
    for result, loop in zip(results[jobs[0]], loops, strict=True):
        result.update(loop_ms_per_step_median=loop, loop_steps=20)
    rows = report.speed_rows(jobs, results, Settings(meta_batch_size=1))
    step, loop, *_ = rows
    assert (loop["implementation"], loop["algorithm"]) == (
        "tfmeta training loop",
        "protonet",
    )
    assert loop["ms_per_step_median"] == 110.0
    assert loop["loop_to_compiled"] == pytest.approx(1.1)
    assert loop["ratio"] == pytest.approx(110.0 / 240.0)  # to the same yardstick
    assert step["loop_ms_per_step_median"] == 110.0
    lines = report.speed_table(rows).splitlines()
    assert lines[2] == "| tfmeta | protonet | off | 100.0 | 1.5 | 900 | 80 | 0.42 |"
    assert (
        lines[3]
        == "| tfmeta training loop | protonet | off | 110.0 | - | - | - | 0.46 |"
    )
    assert lines[4].startswith("| PyTorch 2.13.0+cpu | protonet (eager) |")
    (note,) = report.loop_notes(rows)
    assert note == (
        "tfmeta training loop protonet xla=off (the training binary's Trainer on "
        "Omniglot episodes from files): 1.10x the compiled step's ms/step (median "
        "over 3 round(s) of 20 loop steps; target: within 10%, at most 1.10x)"
    )
    assert "training loop 130.0 ms/step" in report.describe(results[jobs[0]][0])


def test_results_without_a_training_loop_print_as_before():
    from experiments.bench import report
    from experiments.bench.settings import Settings

    jobs = [("tfmeta", ("reptile", "off"))]
    results = {jobs[0]: [_tfmeta_result("reptile", 61.8)]}
    rows = report.speed_rows(jobs, results, Settings())
    assert report.speed_table(rows).splitlines()[2:] == [
        "| tfmeta | reptile | off | 61.8 | 1.5 | 900 | 80 | - |"
    ]
    assert report.loop_notes(rows) == []
    assert report.describe(results[jobs[0]][0]) == (
        "tfmeta reptile xla=off: 61.8 ms/step, compile 1.5 s, peak RSS 900 MiB (+80)"
    )
    # A worker that could not time the loop says why, once under the table.
    skipped = _tfmeta_result("reptile", 61.8)
    skipped["loop_skip"] = "no Omniglot episodes: set TFMETA_OMNIGLOT_DIR"
    rows = report.speed_rows(jobs, {jobs[0]: [skipped, dict(skipped)]}, Settings())
    assert len(rows) == 1
    (note,) = report.loop_notes(rows)
    assert note == (
        "no training loop row for tfmeta reptile xla=off: no Omniglot episodes: "
        "set TFMETA_OMNIGLOT_DIR"
    )


def torch_python() -> str:
    """$TFMETA_TORCH_PYTHON or ../.venv-torch/bin/python; skips without PyTorch."""
    path = os.environ.get("TFMETA_TORCH_PYTHON") or str(
        REPO.parent / ".venv-torch" / "bin" / "python"
    )
    if (
        not os.access(path, os.X_OK)
        or subprocess.run(
            [path, "-c", "import torch"], check=False, capture_output=True
        ).returncode
    ):
        pytest.skip(
            f"no Python with PyTorch at {path} (set TFMETA_TORCH_PYTHON to run this test)"
        )
    return path


@pytest.mark.parametrize("algorithm", ["maml", "protonet"])
def test_a_yardstick_runs_under_the_wrapper_with_the_settings_given(algorithm):
    from experiments.bench import driver, memory
    from experiments.bench.settings import Options, Settings
    from experiments.bench.yardstick import YARDSTICKS

    options = Options(
        torch_python=torch_python(),
        yardstick=driver.DEFAULT_YARDSTICK,
        protonet_yardstick=driver.DEFAULT_PROTONET_YARDSTICK,
    )
    stick = YARDSTICKS[algorithm][0]  # eager, not torch.compile: seconds, not minutes
    script = getattr(options, stick.script_flag)
    if not os.path.isfile(script):
        pytest.skip(f"the yardstick {script} is absent")
    settings = Settings(
        meta_batch_size=1, n_way=3, k_shot=2, q_query=1, steps=1, threads=1
    )
    result = driver.yardstick_run(stick, settings, options, 0.4)
    assert result["yardstick"] == stick.name
    assert (result["n_way"], result["k_shot"], result["q_query"]) == (3, 2, 1)
    assert result["threads"] == 1
    assert result["peak_rss_source"] == memory.peak_rss_source()
    assert result["peak_rss_mib"] > 0 and result["ru_maxrss_mib"] > 0
    assert driver.torch_import_rss_mib(options.torch_python) > 0


def test_a_second_order_step_executes_the_flops_counted(tmp_path):
    """Second-order MAML, 2 inner steps, and Prototypical Networks: the
    convolutions and matmuls oneDNN runs in one step (``--mode=flops``) are
    the count, within the few it leaves out."""
    out = tmp_path / "flops.json"
    command = [sys.executable, "-m", "experiments.benchmark", "--mode=flops"]
    command += ["--algorithms=maml,protonet", "--n_way=3", "--meta_batch_size=1"]
    command += ["--inner_steps=2", "--q_query=2", f"--output_json={out}"]
    done = _run(command)
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
