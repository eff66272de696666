"""tritonclient (gRPC and HTTP) against a running Predictor: metadata, readiness, inference with
typed and binary tensors at 1 and 1,000 rows, statistics, the repository index, and the errors
a client sees. Prints one JSON object; test/open-inference.test.ts checks it.

    .tools/venv-clients/bin/python test/python/oip_client_checks.py host:port test/fixtures/iris.json
"""
import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

url, iris_path = sys.argv[1], sys.argv[2]
iris = json.load(open(iris_path))
rows = np.array([r["values"] for r in iris["rows"]], dtype=np.float32)
expected = [r["label"] for r in iris["rows"]]
thousand = np.tile(rows, (7, 1))[:1000]
thousand_expected = (expected * 7)[:1000]


def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def error_of(call):
    try:
        call()
    except InferenceServerException as e:
        return {"status": str(e.status()), "message": e.message()}
    return None


def run(module, infer_input, requested):
    client = module.InferenceServerClient(url)
    out = {}
    out["live"] = client.is_server_live()
    out["ready"] = client.is_server_ready()
    out["model_ready"] = client.is_model_ready("iris_svc")
    out["unknown_model_ready"] = client.is_model_ready("no_such_model")
    json_kw = {"as_json": True} if module is grpcclient else {}
    metadata = client.get_model_metadata("iris_svc", **json_kw)
    out["metadata"] = {"inputs": metadata["inputs"], "outputs": metadata["outputs"], "versions": metadata["versions"]}

    def infer(data, binary, outputs=("label", "probabilities"), model="iris_svc", version="", datatype="FP32", name="input"):
        tensor = infer_input(name, list(data.shape), datatype)
        if module is httpclient:
            tensor.set_data_from_numpy(data, binary_data=binary)
            wanted = [requested(o, binary_data=binary) for o in outputs]
        else:
            tensor.set_data_from_numpy(data)
            wanted = [requested(o) for o in outputs]
        return client.infer(model, [tensor], model_version=version, outputs=wanted, request_id="check")

    for binary in ([False, True] if module is httpclient else [True]):
        kind = "binary" if binary else "typed"
        one = infer(rows[:1], binary)
        out[f"one_{kind}"] = {"labels": [text(l) for l in one.as_numpy("label")], "sum": float(one.as_numpy("probabilities").sum())}
        many = infer(thousand, binary)
        labels = [text(l) for l in many.as_numpy("label")]
        out[f"thousand_{kind}"] = {
            "count": len(labels),
            "accuracy": sum(a == b for a, b in zip(labels, thousand_expected)) / len(labels),
            "shape": list(many.as_numpy("probabilities").shape),
        }
    response = infer(rows[:2], True, outputs=("label_index",))
    out["label_index"] = response.as_numpy("label_index").tolist()
    out["version_alias"] = (response.get_response()["model_version"] if module is httpclient else response.get_response().model_version)
    out["errors"] = {
        "wrong_feature_count": error_of(lambda: infer(rows[:1, :3], True)),
        "wrong_datatype": error_of(lambda: infer(rows[:1].astype(np.float64), True, datatype="FP64")),
        "wrong_input_name": error_of(lambda: infer(rows[:1], True, name="features")),
        "unknown_model": error_of(lambda: infer(rows[:1], True, model="no_such_model")),
        "unknown_version": error_of(lambda: infer(rows[:1], True, version="9")),
        "unknown_output": error_of(lambda: infer(rows[:1], True, outputs=("logits",))),
    }
    stats = client.get_inference_statistics("iris_svc", **json_kw)["model_stats"][0]
    out["stats"] = {k: stats[k] for k in ("name", "version", "inference_count", "execution_count")}
    out["stats"]["success_count"] = int(stats["inference_stats"]["success"]["count"])
    index = client.get_model_repository_index(**json_kw)
    out["index"] = sorted((m["name"], m.get("version", ""), m.get("state", "")) for m in (index["models"] if isinstance(index, dict) else index))
    return out


print(json.dumps({
    "grpc": run(grpcclient, grpcclient.InferInput, grpcclient.InferRequestedOutput),
    "http": run(httpclient, httpclient.InferInput, httpclient.InferRequestedOutput),
}, default=str))
