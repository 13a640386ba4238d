"""Using a trained encoder: embed a collection, export the encoder, search embeddings, serve it.

* ``images.py``: safe decoding of untrusted image bytes (format allow-list, pixel limit).
* ``encoders.py``: one interface over a run's PyTorch model and exported artefacts
  (ONNX, TorchScript, safetensors), with the preprocessing that goes with it.
* ``embed.py``: embeddings of a dataset, saved as ``.npy`` (+ ``.json`` ids/labels) or Parquet.
* ``export.py`` / ``parity.py``: self-describing exported artefacts and their parity check.
* ``index.py``: FAISS nearest-neighbour indexes (flat, IVF, HNSW) over cosine similarity.
* ``batching.py``, ``middleware.py``, ``schemas.py``, ``app.py``: the HTTP service.
* ``cli.py``: the ``embed``, ``export``, ``index build``, ``search`` and ``serve`` commands.

The third-party libraries these need (FastAPI, uvicorn, ONNX Runtime, FAISS, safetensors, ...)
are the ``serve`` extra and are imported lazily, so training works without them.
"""
