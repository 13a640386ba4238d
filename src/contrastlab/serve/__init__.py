"""Using a trained encoder: embed a collection, export the encoder, search embeddings, serve it.

* ``images.py`` / ``jpeg_check.py``: safe decoding of untrusted image bytes (format allow-list,
  size limits from the header, reduced-scale JPEG decoding, JPEGs too short for their size).
* ``encoders.py``: one interface over a run's PyTorch model and exported artefacts
  (ONNX, TorchScript, safetensors), with the preprocessing that goes with it.
* ``embed.py``: embeddings of a dataset, saved as ``.npy`` (+ ``.json`` ids/labels) or Parquet.
* ``export.py`` / ``parity.py``: self-describing exported artefacts and their parity check.
* ``index.py``: FAISS nearest-neighbour indexes (flat, IVF, HNSW) over cosine similarity.
* ``progress.py``: progress of the long phases on stderr.
* The HTTP service: ``request_parsing.py`` (bodies to images and parameters, or 4xx),
  ``decoding.py`` (pixel budget, worker pools by cost, deadline), ``batching.py``
  (micro-batching, small requests first), ``service.py`` (what the routes share, the limits),
  ``middleware.py`` (API key, body size and timeout), ``schemas.py``, ``app.py`` (the routes),
  ``server.py`` (uvicorn with header timeouts and a connection limit); for text and
  image-text runs ``text_service.py`` (what is served, on ``text_encoders.py``) and
  ``text_inputs.py`` (the checks and limits of texts).
* ``cli.py`` / ``serve_command.py``: the ``embed``, ``export``, ``index build``, ``search`` and
  ``serve`` commands.

Outputs are written atomically by :mod:`contrastlab.atomic`. The third-party libraries these
need (FastAPI, uvicorn, ONNX Runtime, FAISS, safetensors, ...) are the ``serve`` extra and are
imported lazily, so training works without them.
"""
