"""Asks the mlmesh Predictor for iris labels with tritonclient over HTTP (the Open Inference
Protocol's REST binding, binary tensors). The README shows this file; test/open-inference.test.ts
runs it.

    .tools/venv-clients/bin/python test/python/triton_http_example.py [host:port]
"""
import sys

import numpy as np
import tritonclient.http as httpclient

url = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50052"
client = httpclient.InferenceServerClient(url)
print("live:", client.is_server_live(), "ready:", client.is_server_ready(), "model ready:", client.is_model_ready("iris_svc"))
metadata = client.get_model_metadata("iris_svc")
print("inputs:", [(i["name"], i["datatype"], i["shape"]) for i in metadata["inputs"]])

rows = np.array([[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 4.2, 1.5], [6.3, 3.3, 6.0, 2.5]], dtype=np.float32)
features = httpclient.InferInput("input", list(rows.shape), "FP32")
features.set_data_from_numpy(rows, binary_data=True)
outputs = [httpclient.InferRequestedOutput("label", binary_data=True), httpclient.InferRequestedOutput("probabilities", binary_data=False)]
result = client.infer("iris_svc", [features], outputs=outputs, request_id="readme-http")
print("model version:", result.get_response()["model_version"])
print("labels:", [label.decode() for label in result.as_numpy("label")])
print("probabilities:", result.as_numpy("probabilities").round(4).tolist())
