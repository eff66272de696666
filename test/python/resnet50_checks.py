"""tritonclient (gRPC and HTTP) against a Predictor serving ResNet-50 (random weights): a float
tensor batch and a JPEG file as a BYTES input. Prints one JSON object; test/resnet50.test.ts
checks it.

    .tools/venv-clients/bin/python test/python/resnet50_checks.py host:port image.jpg
"""
import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

url, jpeg_path = sys.argv[1], sys.argv[2]
jpeg = open(jpeg_path, "rb").read()


def run(module):
    client = module.InferenceServerClient(url)
    kw = {"binary_data": True} if module is httpclient else {}
    tensor = module.InferInput("input", [2, 3, 224, 224], "FP32")
    tensor.set_data_from_numpy(np.random.default_rng(0).standard_normal((2, 3, 224, 224), dtype=np.float32), **kw)
    probabilities = client.infer("resnet50", [tensor], outputs=[module.InferRequestedOutput("probabilities", **kw)]).as_numpy("probabilities")
    image = module.InferInput("input", [1], "BYTES")
    image.set_data_from_numpy(np.array([jpeg], dtype=np.object_), **kw)
    from_jpeg = client.infer("resnet50", [image], outputs=[module.InferRequestedOutput("probabilities", **kw)]).as_numpy("probabilities")
    return {
        "tensor_shape": list(probabilities.shape),
        "tensor_sums": [round(float(s), 4) for s in probabilities.sum(axis=1)],
        "jpeg_shape": list(from_jpeg.shape),
        "jpeg_sum": round(float(from_jpeg.sum()), 4),
    }


print(json.dumps({"grpc": run(grpcclient), "http": run(httpclient)}))
