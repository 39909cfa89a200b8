"""The serving stage: a FastAPI app that scores requests with the champion model."""
