"""KServe's Python ModelServer (PyPI `kserve`) serving ONNX models with
onnxruntime: the peer a KServe user would deploy for a custom runtime (a `Model`
subclass), for scripts/bench-peers.sh. One intra-op thread per session, as
Quiver's ONNX Runtime backend runs.

usage: kserve_onnx.py HTTP_PORT WORKERS NAME=MODEL.onnx...
"""

import sys
import uuid

import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.utils.utils import from_np_dtype


class OnnxModel(Model):
    def __init__(self, name, path):
        super().__init__(name)
        self.path = path
        self.load()

    def load(self):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(self.path, options,
                                            providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return self.ready

    # With several workers KServe pickles the model into each worker process: the
    # session does not pickle, so each worker opens its own.
    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("session", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.load()

    def predict(self, payload: InferRequest, headers=None, response_headers=None):
        feed = {i.name: i.as_numpy() for i in payload.inputs}
        outs = self.session.run(self.output_names, feed)
        outputs = []
        for name, value in zip(self.output_names, outs):
            o = InferOutput(name=name, shape=list(value.shape),
                            datatype=from_np_dtype(value.dtype))
            o.set_data_from_numpy(value, binary_data=False)
            outputs.append(o)
        return InferResponse(model_name=self.name, infer_outputs=outputs,
                             response_id=payload.id or str(uuid.uuid4()))


def main():
    port, workers, specs = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
    models = [OnnxModel(*spec.split("=", 1)) for spec in specs]
    ModelServer(http_port=port, workers=workers, enable_grpc=False,
                enable_latency_logging=False).start(models)


if __name__ == "__main__":
    main()
