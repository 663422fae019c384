"""Serves the exports of a models.config over TF Serving's REST and gRPC APIs,
for trying a deployment where TF Serving's model server is not installed.

  python -m experiments.serve_local --models_config=/tmp/models/models.config \
      --rest_port=8501 --grpc_port=8500

Each model of the file (its ``base_path`` as this machine sees it) is loaded
with ``tf.saved_model.load``, every version, the latest answering by default;
then requests are answered until the process is stopped (Ctrl-C). Clients
(``experiments.serve_client``, curl, your own) work unchanged against
``tensorflow_model_server --model_config_file=...`` on the same ports. A
development stand-in, not a production server: one process, no batching, no
version policy, no reload.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from . import InputError, run_binary

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined when run as a binary only, so importing this module registers no flags."""
    flags.DEFINE_string(
        "models_config", None, "the models.config an export wrote (TF Serving's format)"
    )
    flags.DEFINE_integer("rest_port", 8501, "REST port (TF Serving's is 8501)")
    flags.DEFINE_integer(
        "grpc_port", 8500, "gRPC port (TF Serving's is 8500); -1: no gRPC"
    )
    flags.DEFINE_string(
        "host", "127.0.0.1", "address to listen on (0.0.0.0: every interface)"
    )


def base_paths(models_config: str) -> dict[str, str]:
    """Model name -> base path of a models.config; InputError naming a
    missing file or a base path that is not a folder here."""
    from tfmeta.export import ModelsConfigError, read_models_config

    if not os.path.isfile(models_config):
        raise InputError(f"--models_config {models_config} is not a file")
    try:
        entries = read_models_config(models_config)
    except ModelsConfigError as error:
        raise InputError(f"{error} (--models_config)") from None
    if not entries:
        raise InputError(f"{models_config} names no model")
    paths = {}
    for entry in entries:
        path = entry["base_path"]
        if not os.path.isdir(path):
            raise InputError(
                f"model {entry['name']!r}: its base_path {path} is not a folder on this "
                "machine (an export with --base_path for a container? export without it)"
            )
        paths[entry["name"]] = path
    return paths


def main(argv):
    del argv
    if not FLAGS.models_config:
        raise InputError("--models_config is required")
    for flag in ("rest_port", "grpc_port"):
        value = getattr(FLAGS, flag)
        if not (value == -1 and flag == "grpc_port") and not 0 <= value < 65536:
            raise InputError(f"--{flag} must be a port in [0, 65535], got {value}")
    paths = base_paths(FLAGS.models_config)
    grpc_port = None if FLAGS.grpc_port == -1 else FLAGS.grpc_port
    if grpc_port is not None:
        try:
            import tensorflow_serving.apis  # noqa: F401
        except ImportError:
            print(
                "gRPC off: it needs tensorflow-serving-api (pip install 'tfmeta[serving]')",
                file=sys.stderr,
            )
            grpc_port = None

    import logging

    from tfmeta.serving.local_server import LocalModels, LocalServer

    # Loading logs a warning per custom gradient of the model (never asked
    # for in serving): keep the server's output to what it serves.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        models = LocalModels(paths)
    except FileNotFoundError as error:
        raise InputError(str(error)) from None
    try:
        server = LocalServer(models, FLAGS.host, FLAGS.rest_port, grpc_port)
    except OSError as error:
        raise InputError(
            f"cannot listen on {FLAGS.host} (--rest_port {FLAGS.rest_port}, "
            f"--grpc_port {FLAGS.grpc_port}): {error.strerror or error}"
        ) from None
    for name, path in paths.items():
        print(f"serving {name!r}, versions {models.versions(name)}, from {path}")
    print(f"REST: http://{server.rest}/v1/models/<name>:predict", flush=True)
    if server.grpc:
        print(f"gRPC: {server.grpc} (tensorflow.serving.PredictionService)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


def run() -> None:
    """The console script ``tfmeta-serve-local``."""
    define_flags()
    run_binary(__name__, main)


if __name__ == "__main__":
    run()
