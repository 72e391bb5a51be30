"""``DELETE /candidates/<candidate_id>``: erase what is kept about a candidate (their baselines)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from ..analysis.baselines import MAX_CANDIDATE_ID
from ..errors import InvalidRequest
from .requests import current_analyzer, envelope, request_lang

MESSAGES = {
    "deleted": {"zh": "候选人基线已删除", "en": "The candidate's baseline was deleted"},
    "absent": {"zh": "没有该候选人的基线", "en": "Nothing was kept about this candidate"},
}

bp = Blueprint("candidates", __name__)


@bp.delete("/candidates/<path:candidate_id>", endpoint="delete_candidate")
def delete_candidate(candidate_id: str):
    lang = request_lang()
    if len(candidate_id) > MAX_CANDIDATE_ID or not candidate_id.isprintable():
        raise InvalidRequest(
            f"The candidate id must be 1 to {MAX_CANDIDATE_ID} printable characters, as sent in 'candidate_id'.",
            error_code="INVALID_CANDIDATE_ID",
        )
    deleted = current_analyzer().forget_candidate(candidate_id)
    return envelope(True, MESSAGES["deleted" if deleted else "absent"][lang], {"deleted": deleted})


def _operation() -> dict[str, Any]:
    envelope_ref = {"$ref": "#/components/schemas/Envelope"}
    return {
        "delete": {
            "summary": "Erase a candidate's baseline (the running feature statistics kept under a keyed hash of the id)",
            "security": [{"ApiKey": []}],
            "parameters": [
                {
                    "name": "candidate_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_CANDIDATE_ID},
                },
                {"name": "lang", "in": "query", "required": False, "schema": {"enum": ["zh", "en"]}},
            ],
            "responses": {
                "200": {
                    "description": "data.deleted: true if anything was kept (idempotent: false the second time)",
                    "content": {
                        "application/json": {
                            "schema": {
                                "allOf": [
                                    envelope_ref,
                                    {
                                        "type": "object",
                                        "properties": {
                                            "data": {
                                                "type": "object",
                                                "properties": {"deleted": {"type": "boolean"}},
                                                "required": ["deleted"],
                                                "additionalProperties": False,
                                            }
                                        },
                                    },
                                ]
                            }
                        }
                    },
                },
                **{
                    status: {"description": text, "content": {"application/json": {"schema": envelope_ref}}}
                    for status, text in {
                        "400": "Bad candidate id (INVALID_CANDIDATE_ID) or lang",
                        "401": "Missing or wrong X-API-Key (UNAUTHORIZED)",
                        "404": "No candidate id in the path (NOT_FOUND)",
                        "429": "Rate limit reached (RATE_LIMITED)",
                        "503": "The baseline store (Redis) cannot be reached (BASELINES_UNAVAILABLE)",
                    }.items()
                },
            },
        }
    }


OPENAPI_PATHS = {"/candidates/{candidate_id}": _operation()}
