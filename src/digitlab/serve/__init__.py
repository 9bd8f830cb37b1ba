"""The prediction service: ``digitlab serve`` (FastAPI under uvicorn) and the drawing page."""
