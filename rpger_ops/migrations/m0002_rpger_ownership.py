"""Schema ownership: RPGer's own validators, and Chroma collections as RPGer makes them.

RPGer sets `$jsonSchema` validators only when it creates a collection and
skips existing ones, so before this migration whichever side created a
collection first decided its validator (0001's are minimal). From here on
the stack carries RPGer's full validators (shared/rpger-client.md: its mongo
init script for users, dashboards, widgets, campaigns and notes; its schema
files for monsters, spells, items, npcs and characters), so the same strict
rules apply whoever came first:

- a missing collection is created with the validator, as RPGer creates it;
- an existing one gets it by `collMod` with `validationLevel: strict`, or
  `moderate` when some of its documents don't match (they stay editable; the
  note says how many);
- on FerretDB, which has no document validation, nothing is applied and the
  run says so in a note.

Chroma policy: keep what exists; create new collections as RPGer would. An
existing collection is never changed (its distance can't be anyway). A
missing one is created as RPGer's backend does: the stock client's
`create_collection(name, metadata={"description": ...})`, so the client's
default embedding function and l2 distance. The one exception is what 0001
itself just made: an empty collection still exactly in 0001's shape (no
records, 0001's metadata, cosine, no embedding function) has never been
used, and is re-created in RPGer's shape.

Redis: no step (its ledger stays at 1). Self-contained on purpose (see docs/migrations.md): the
validators are written out here, so version 2 means the same thing forever.
"""

from __future__ import annotations

from typing import Any

from pymongo.errors import OperationFailure

from rpger_ops.migrations import m0001_rpger_schema as m0001
from rpger_ops.migrations.base import MigrationContext

VERSION = 2
NAME = "rpger_ownership"

NOT_IMPLEMENTED = 238

# --- RPGer's validators (same constraints; its descriptions left out) -----------------------

S: dict[str, Any] = {"type": "string"}
N: dict[str, Any] = {"type": "number"}
B: dict[str, Any] = {"type": "boolean"}
ANY_OBJECT: dict[str, Any] = {"type": "object"}


def _arr(items: dict[str, Any] = S) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _obj(props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": props}


def _top(required: list[str], props: dict[str, Any]) -> dict[str, Any]:
    return {"$jsonSchema": {"bsonType": "object", "required": required, "properties": props}}


def _bson(kind: str) -> dict[str, Any]:
    return {"bsonType": kind}


STRINGS = _arr(S)
EMBEDDING_REFERENCES = _arr(_obj({"chroma_collection": S, "embedding_id": S, "content_type": S, "content_index": N}))
TIMESTAMPS = {"created_at": S, "updated_at": S}
ABILITY_SCORES = {k: N for k in ("strength", "dexterity", "constitution", "intelligence", "wisdom", "charisma")}
RELATIONSHIPS = _arr(_obj({"name": S, "relationship_type": S, "description": S}))
SPELL_SLOTS = _obj({"slots": N, "slots_used": N, "spells": STRINGS})
SKILLS = ("acrobatics", "animal_handling", "arcana", "athletics", "deception", "history", "insight",
          "intimidation", "investigation", "medicine", "nature", "perception", "performance", "persuasion",
          "religion", "sleight_of_hand", "stealth", "survival")

VALIDATORS: dict[str, dict[str, Any]] = {
    # RPGer's mongo init script (db_stack/init-scripts/mongo/init.js).
    "users": _top(["username", "email", "password", "role"], {
        "username": _bson("string"), "email": _bson("string"), "password": _bson("string"),
        "role": {"enum": ["user", "admin"]},
        "preferences": {"bsonType": "object", "properties": {
            "theme": {"enum": ["light", "dark", "system"]}, "fontSize": {"enum": ["small", "medium", "large"]},
            "dashboardLayout": _bson("object"), "notifications": _bson("bool")}},
        "lastLogin": _bson("date")}),
    "dashboards": _top(["userId", "name", "layouts"], {
        "userId": _bson("objectId"), "name": _bson("string"), "description": _bson("string"),
        "layouts": _bson("object"), "isDefault": _bson("bool")}),
    "widgets": _top(["userId", "widgetId", "name", "type"], {
        "userId": _bson("objectId"), "widgetId": _bson("string"), "name": _bson("string"), "type": _bson("string"),
        "config": _bson("object"), "layout": _bson("object"), "active": _bson("bool")}),
    "campaigns": _top(["userId", "name", "concept", "setting"], {
        "userId": _bson("objectId"), "name": _bson("string"), "concept": _bson("string"),
        "setting": _bson("string"), "characters": _bson("array"), "locations": _bson("array"),
        "npcs": _bson("array")}),
    "notes": _top(["userId", "title", "content"], {
        "userId": _bson("objectId"), "title": _bson("string"), "content": _bson("string"),
        "category": _bson("string"), "tags": _bson("array"), "pinned": _bson("bool")}),
    # RPGer's backend schema files (app_stack/backend/db/schemas/*_schema.py), prepared the way
    # its init_db does: `required` lifted to the top level.
    "monsters": _top(["name", "category", "stats", "description"], {
        "name": S, "category": S,
        "stats": _obj({"frequency": S, "no_appearing": S, "armor_class": N, "move": S, "hit_dice": S,
                       "treasure_type": S}),
        "description": S, "path": S,
        "metadata": _obj({"type": S, "alignment": S, "challenge_rating": S, "size": S, "languages": STRINGS,
                          "senses": STRINGS}),
        "habitat": _obj({"primary_environments": STRINGS, "terrain_preferences": STRINGS,
                         "climate_preferences": STRINGS, "regional_distribution": STRINGS,
                         "specific_locations": STRINGS, "migration_patterns": S, "lair_description": S}),
        "ecology": _obj({"diet": S, "predators": STRINGS, "prey": STRINGS, "behavior": S, "lifecycle": S,
                         "socialization": S, "interaction_with_civilization": S}),
        "embedding_references": EMBEDDING_REFERENCES, "related_monsters": STRINGS, "encounter_suggestions": STRINGS,
        "campaign_usage": _obj({"plot_hooks": STRINGS, "regional_variants": STRINGS}),
        "extended_properties": _obj({"legendary_actions": STRINGS, "lair_actions": STRINGS,
                                     "regional_effects": STRINGS, "custom_abilities": STRINGS}),
        **TIMESTAMPS}),
    "spells": _top(["name", "level", "class", "components", "range", "duration", "description"], {
        "name": S, "level": N, "class": STRINGS,
        "components": _obj({"verbal": B, "somatic": B, "material": B, "material_components": S}),
        "range": S, "duration": S, "description": S,
        "metadata": _obj({"school": S, "damage_type": S, "save": S, "casting_time": S, "concentration": B,
                          "ritual": B}),
        "embedding_references": EMBEDDING_REFERENCES,
        "extended_properties": _obj({"higher_level_casting": S, "ritual": B, "source": S, "tags": STRINGS}),
        **TIMESTAMPS}),
    "items": _top(["name", "type", "description"], {
        "name": S, "type": S, "subtype": S, "rarity": S, "description": S,
        "properties": _obj({"damage": S, "damage_type": S, "weight": N, "properties": STRINGS, "armor_class": N,
                            "strength_requirement": N, "stealth_disadvantage": B}),
        "magical_properties": _obj({"bonus": N, "abilities": STRINGS, "attunement": B, "charges": N,
                                    "recharge": S}),
        "embedding_references": EMBEDDING_REFERENCES,
        "extended_properties": _obj({"creator": S, "lore": S, "variants": STRINGS, "value": N, "source": S,
                                     "tags": STRINGS}),
        **TIMESTAMPS}),
    "npcs": _top(["name", "race", "description"], {
        "name": S, "race": S, "class": S, "level": N, "description": S, "appearance": S,
        "personality": STRINGS,
        "voice": _obj({"speech_pattern": S, "common_phrases": STRINGS, "tone": S}),
        "background": S,
        "stats": _obj({**ABILITY_SCORES, "armor_class": N, "hit_points": N}),
        "combat_style": S, "relationships": RELATIONSHIPS, "knowledge": STRINGS, "locations": STRINGS,
        "hooks": STRINGS,
        "behavior_patterns": _obj({
            "interaction_patterns": _arr(_obj({"pattern_id": S, "pattern_type": S, "trigger_conditions": S,
                                               "response_tendencies": S})),
            "decision_making": _obj({"priorities": STRINGS, "risk_tolerance": S, "moral_framework": S}),
            "emotional_responses": _obj({"primary_emotions": STRINGS, "emotional_triggers": ANY_OBJECT,
                                         "expression_style": S}),
            "routine_behaviors": _obj({"daily_routines": STRINGS, "quirks": STRINGS, "comfort_behaviors": STRINGS,
                                       "stress_behaviors": STRINGS}),
            "social_dynamics": _obj({"leadership_style": S, "group_role": S, "status_signals": STRINGS})}),
        "novel_extraction_metadata": _obj({"description_pattern_id": S, "dialogue_pattern_ids": STRINGS,
                                           "personality_pattern_id": S, "behavior_pattern_ids": STRINGS,
                                           "transformation_methods": STRINGS}),
        "embedding_references": EMBEDDING_REFERENCES,
        "extended_properties": _obj({"faction_memberships": STRINGS, "secrets": STRINGS, "possessions": STRINGS}),
        **TIMESTAMPS}),
    # The schema file's characters (the init script's version requires only userId and name).
    "characters": _top(["name", "userId", "race", "class", "level", "stats"], {
        "name": S, "userId": _bson("objectId"), "campaign_id": S, "race": S, "class": S, "subclass": S,
        "level": N, "experience_points": N, "alignment": S, "background": S, "appearance": S,
        "personality": _obj({"traits": STRINGS, "ideals": STRINGS, "bonds": STRINGS, "flaws": STRINGS}),
        "stats": _obj({**ABILITY_SCORES, "armor_class": N, "hit_points": N, "max_hit_points": N,
                       "temporary_hit_points": N, "speed": N}),
        "saving_throws": _obj(dict(ABILITY_SCORES)),
        "skills": _obj(dict.fromkeys(SKILLS, N)),
        "abilities": _arr(_obj({"name": S, "description": S, "source": S})),
        "inventory": _arr(_obj({"item_id": S, "quantity": N, "equipped": B, "notes": S})),
        "spells": _obj({"spellcasting_ability": S, "spell_save_dc": N, "spell_attack_bonus": N, "cantrips": STRINGS,
                        **{f"level_{n}": SPELL_SLOTS for n in range(1, 10)}}),
        "companions": _arr(_obj({"name": S, "type": S, "description": S, "stats": ANY_OBJECT})),
        "background_details": S, "relationships": RELATIONSHIPS,
        "quests": _arr(_obj({"title": S, "description": S, "status": S, "rewards": STRINGS})),
        "journal_entries": _arr(_obj({"title": S, "content": S, "date": S})),
        "embedding_references": EMBEDDING_REFERENCES,
        "extended_properties": _obj({"character_development_goals": STRINGS, "personal_quests": STRINGS,
                                     "character_hooks": STRINGS}),
        **TIMESTAMPS}),
}

# --- Chroma: RPGer's collections as its backend creates them ------------------------------------

CHROMA_DESCRIPTIONS: dict[str, str] = {
    "monsters": "Monster descriptions and attributes",
    "spells": "Spell descriptions and attributes",
    "items": "Item descriptions and attributes",
    "npcs": "NPC descriptions and attributes",
    "characters": "Player character descriptions and attributes",
    "campaign_notes": "Campaign notes and descriptions",
}


def validator(collection: str) -> dict[str, Any]:
    return VALIDATORS[collection]


def rpger_chroma_metadata(collection: str) -> dict[str, Any]:
    return {"description": CHROMA_DESCRIPTIONS[collection]}


def up_mongo(ctx: MigrationContext) -> None:
    _mongo_validators(ctx)


def up_chroma(ctx: MigrationContext) -> None:
    _chroma_collections(ctx)


def down_mongo(ctx: MigrationContext) -> None:
    """Back to 0001's validators."""
    if ctx.mongo_is_ferretdb:
        return
    db = ctx.mongo
    existing = set(db.list_collection_names())
    for name in VALIDATORS:
        if name in existing and name in m0001.REQUIRED_FIELDS:
            db.command("collMod", name, validator=m0001.validator(name), validationLevel="moderate")


def down_chroma(ctx: MigrationContext) -> None:
    """Collections stay as they are: which of them this migration re-created can't be
    told apart from RPGer's own any more."""
    ctx.note("chroma: collections kept as they are")


def _mongo_validators(ctx: MigrationContext) -> None:
    db = ctx.mongo
    existing = set(db.list_collection_names())
    if ctx.mongo_is_ferretdb:
        for name in VALIDATORS:
            if name not in existing:
                db.create_collection(name)
        ctx.note(f"mongo: RPGer's $jsonSchema validators were NOT applied to {', '.join(VALIDATORS)}: the "
                 "server (FerretDB) has no document validation, so it accepts documents of any shape")
        return
    lenient: list[str] = []
    for i, (name, rules) in enumerate(VALIDATORS.items()):
        ctx.progress("mongo validators", i, len(VALIDATORS))
        try:
            if name not in existing:
                db.create_collection(name, validator=rules)  # exactly as RPGer's init scripts create it
                continue
            mismatched = db[name].count_documents({"$nor": [rules]})
            level = "strict" if mismatched == 0 else "moderate"
            db.command("collMod", name, validator=rules, validationLevel=level, validationAction="error")
        except OperationFailure as exc:
            if exc.code != NOT_IMPLEMENTED:
                raise
            ctx.note(f"mongo: RPGer's $jsonSchema validators were NOT applied: the server does not support "
                     f"them ({exc.code}: {exc.details.get('errmsg') if exc.details else exc})")
            return
        if mismatched:
            lenient.append(f"{name} ({mismatched})")
    ctx.progress("mongo validators", len(VALIDATORS), len(VALIDATORS))
    if lenient:
        ctx.note("mongo: documents that don't match RPGer's validator in " + ", ".join(lenient) +
                 ": validationLevel moderate there, so they stay editable; fix them, then run "
                 "collMod with validationLevel strict")


def _chroma_collections(ctx: MigrationContext) -> None:
    client = ctx.chroma
    existing = {c.name: c for c in client.list_collections()}
    kept: list[str] = []
    for i, name in enumerate(CHROMA_DESCRIPTIONS):
        ctx.progress("chroma collections", i, len(CHROMA_DESCRIPTIONS))
        coll = existing.get(name)
        if coll is not None and not _unused_0001_placeholder(coll):
            kept.append(name)  # keep what exists, whoever made it
            continue
        if coll is not None:
            client.delete_collection(name)
        # The stock client's defaults, as RPGer's backend calls it: its default embedding
        # function (recorded in the configuration, never run: RPGer adds embeddings itself).
        client.create_collection(name, metadata=rpger_chroma_metadata(name))
    ctx.progress("chroma collections", len(CHROMA_DESCRIPTIONS), len(CHROMA_DESCRIPTIONS))
    if kept:
        ctx.note(f"chroma: kept existing collections as they are ({', '.join(kept)}); "
                 "new ones were created as RPGer creates them")


def _unused_0001_placeholder(coll: Any) -> bool:
    config = coll.configuration_json or {}
    return (coll.metadata == m0001.chroma_metadata(coll.name)
            and (config.get("embedding_function") or {}).get("type") == "legacy"
            and (config.get("hnsw") or {}).get("space") == "cosine"
            and coll.count() == 0)
