"""The ``/v1`` API described as OpenAPI 3.1, served at ``/openapi.json``: written here, from
the grant's own fields, because the statuses and the error shape are the contract and a
generator would describe its framework's defaults instead."""

from __future__ import annotations

from typing import Any

from worker.domain.grant import FIELDS, Priority, Provider
from worker.serve.api import MAX_BATCH

_STRING = {"type": "string"}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "field": {"type": "string"}},
}
_GRANT: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["provider", "customer_id", "amount"],
    "properties": {
        "idempotency_key": {"type": "string", "description": "Or the Idempotency-Key header."},
        "provider": {"enum": [p.value for p in Provider]},
        "customer_id": {"type": "string"},
        "amount": {
            "oneOf": [{"type": "string"}, {"type": "number"}],
            "description": "Exact decimal; a string keeps its spelling.",
        },
        "currency_code": {"type": "string", "description": "ISO 4217; default from settings."},
        "note": {"type": ["string", "null"]},
        "force": {"type": "boolean"},
        "credit_type": {"type": ["string", "null"]},
        "priority": {
            "enum": [p.value for p in Priority],
            "description": "interactive (default) takes the next slots of a short budget.",
        },
    },
}
assert set(_GRANT["properties"]) == set(FIELDS), "the document must name every grant field"


def _answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {"application/json": {"schema": schema or {"$ref": "#/components/schemas/Job"}}}
    return {"description": description, "content": body}


def _errors(*statuses: int) -> dict[str, Any]:
    words = {
        401: "no valid bearer token",
        404: "no job with this key",
        409: "the key already holds another grant",
        413: "the body is too large",
        422: "a field refused: the line names it",
    }
    error = {"$ref": "#/components/schemas/Error"}
    return {str(s): _answer(words[s], error) for s in statuses}


def document() -> dict[str, Any]:
    grant_ref = {"$ref": "#/components/schemas/Grant"}
    grant_body = {"content": {"application/json": {"schema": grant_ref}}}
    batch = {
        "type": "object",
        "required": ["grants"],
        "properties": {
            "grants": {"type": "array", "maxItems": MAX_BATCH, "items": grant_ref},
            "batch": {
                "type": "string",
                "description": "A name to follow the grants by: creditq batch status NAME.",
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "creditq intake", "version": "1"},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Grant": _GRANT,
                "Error": _ERROR,
                "Job": {"type": "object", "description": "The job JSON of creditq status --json"},
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/grants": {
                "post": {
                    "summary": "Hand over one grant, exactly once per key",
                    "parameters": [
                        {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"}}
                    ],
                    "requestBody": grant_body,
                    "responses": {
                        "201": _answer("created and queued"),
                        "200": _answer("the same grant again: nothing sent"),
                        **_errors(401, 409, 413, 422),
                    },
                }
            },
            "/v1/grants/batch": {
                "post": {
                    "summary": f"Hand over up to {MAX_BATCH} grants, all valid or none written",
                    "requestBody": {"content": {"application/json": {"schema": batch}}},
                    "responses": {
                        "201": _answer("at least one created", {"type": "object"}),
                        "200": _answer("all were there already", {"type": "object"}),
                        **_errors(401, 409, 413, 422),
                    },
                }
            },
            "/v1/grants/{key}": {
                "get": {
                    "summary": "The job of a key, with its history",
                    "parameters": [
                        {
                            "name": "key",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {"200": _answer("the job"), **_errors(401, 404)},
                }
            },
        },
    }
