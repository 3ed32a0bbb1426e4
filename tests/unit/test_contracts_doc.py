"""Every example in docs/contracts.md parses with the schema it is labelled with."""

import json
import re
from pathlib import Path

from common import schemas

DOC = Path(__file__).resolve().parents[2] / "docs" / "contracts.md"
EXAMPLE = re.compile(r"<!-- schema: (\w+) -->\s*```json\n(.*?)```", re.DOTALL)


def test_doc_examples_match_the_schemas():
    examples = EXAMPLE.findall(DOC.read_text())
    assert len(examples) >= 6
    seen = set()
    for schema_name, body in examples:
        schema = getattr(schemas, schema_name)
        data = json.loads(body)
        parsed = schema.model_validate(data)
        # Nothing in the example is dropped or defaulted away: it round-trips exactly.
        assert parsed.model_dump(mode="json", exclude_unset=True) == data, schema_name
        seen.add(schema_name)
    assert seen >= {
        "RecommendationRequest",
        "RecommendationReply",
        "ModelUpdate",
        "SnapshotPointer",
        "ServingRecord",
    }


def test_doc_names_the_default_topics_and_paths():
    from common import storage
    from common.settings import Settings

    text = DOC.read_text()
    defaults = Settings.model_fields
    for field in ("topic_requests", "topic_replies", "topic_dlq", "topic_model_updates", "minio_bucket"):
        assert f"`{defaults[field].default}`" in text, field
    for path in (
        storage.CURRENT_SNAPSHOT,
        storage.SERVING_RECORD,
        storage.COMPLETION_MARKER,
        storage.EXPORT_METADATA,
    ):
        assert path in text, path
