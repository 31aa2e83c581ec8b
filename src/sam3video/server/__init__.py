"""``sam3video serve``: SAM 3 video sessions over HTTP (FastAPI + uvicorn, the ``server`` extra).

- `sam3video.server.app.create_app(predictor, config)`: the ASGI app around one shared
  `Sam3VideoPredictor`.
- `sam3video.server.cli`: the ``serve`` subcommand and ``python -m sam3video.server``.
- `sam3video.server.rle`: masks to and from COCO RLE (also used by `sam3video.client`).

Importing this package imports neither FastAPI nor torch; the modules that need them do.
"""
