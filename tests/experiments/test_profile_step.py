"""The op-type profile of a meta-step."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.helpers import REPO


def test_profile_lists_the_convolutions_of_a_maml_step():
    command = [sys.executable, "-m", "experiments.results.profile_step"]
    command += ["--n_way=3", "--meta_batch_size=1", "--inner_steps=1", "--top=100"]
    # The binary's own oneDNN default, whatever the tests' environment says.
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    done = subprocess.run(
        command,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {}
    for line in done.stdout.splitlines():
        match = re.fullmatch(r"(\S+)\s+([\d.]+)\s+(\d+)\s+([\d.]+)%", line.strip())
        if match:
            rows[match[1]] = (float(match[2]), int(match[3]), float(match[4]))
    assert "oneDNN on" in done.stdout
    # Second-order MAML, 1 inner step: forward convolutions and both kinds of
    # convolution gradients (4 conv layers), as kernels, not call wrappers.
    kinds = {
        "forward": r"Conv2D$",
        "filter gradient": r"Conv2DBackpropFilter",
        "input gradient": r"Conv2DBackpropInput",
    }
    for kind, pattern in kinds.items():
        found = [t for t in rows if re.search(pattern, t)]
        assert found, (kind, sorted(rows))
        assert sum(rows[t][1] for t in found) >= 4, (kind, found)
    assert not any(t.startswith("__inference") or t == "While" for t in rows)
    assert abs(sum(share for _, _, share in rows.values()) - 100.0) < 1.0
