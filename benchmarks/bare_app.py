"""The reference for the serving benchmark: the least a FastAPI service can do to score
a loan record with numpy (no validation beyond types, no model file, no metrics, no log).

    uvicorn --factory benchmarks.bare_app:create --loop uvloop --http h11
"""

from __future__ import annotations

import numpy as np
import orjson
from fastapi import FastAPI, Request, Response

NUMERIC = [
    "ApplicantIncome",
    "CoapplicantIncome",
    "LoanAmount",
    "Loan_Amount_Term",
    "Credit_History",
]
CATEGORIES = {
    "Gender": ["Male", "Female"],
    "Married": ["Yes", "No"],
    "Dependents": ["0", "1", "2", "3+"],
    "Education": ["Graduate", "Not Graduate"],
    "Self_Employed": ["Yes", "No"],
    "Property_Area": ["Urban", "Semiurban", "Rural"],
}


def create() -> FastAPI:
    app = FastAPI()
    rng = np.random.default_rng(0)
    slots = {
        (c, v): len(NUMERIC) + i
        for i, (c, v) in enumerate((c, v) for c, values in CATEGORIES.items() for v in values)
    }
    width = len(NUMERIC) + len(slots)
    weights = rng.normal(size=width) / 10
    scale = np.array([5000.0, 2000.0, 150.0, 360.0, 1.0] + [1.0] * len(slots))

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        record = orjson.loads(await request.body())
        x = np.zeros(width)
        for i, name in enumerate(NUMERIC):
            value = record.get(name)
            x[i] = float(value) if value is not None else 0.0
        for name in CATEGORIES:
            slot = slots.get((name, record.get(name)))
            if slot is not None:
                x[slot] = 1.0
        p = float(1.0 / (1.0 + np.exp(-(x / scale) @ weights)))
        body = {"predictions": [{"label": "Y" if p > 0.5 else "N", "probability": round(p, 6)}]}
        return Response(orjson.dumps(body), media_type="application/json")

    return app
