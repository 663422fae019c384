"""Clients of a TF Serving model server for exported learners: REST bodies, gRPC requests."""

from tfmeta.serving.requests import (
    IMAGE_EXTENSIONS,
    ImageEpisode,
    decode_rest_inputs,
    format_predictions,
    predict_grpc,
    predict_request,
    predict_rest,
    read_episode,
    request_arrays,
    rest_body,
    rest_url,
    tensor_proto,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageEpisode",
    "decode_rest_inputs",
    "format_predictions",
    "predict_grpc",
    "predict_request",
    "predict_rest",
    "read_episode",
    "request_arrays",
    "rest_body",
    "rest_url",
    "tensor_proto",
]
