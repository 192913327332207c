"""The case store on every backend (tests/postgres.py): SQLite, PostgreSQL with pgvector, and PostgreSQL without
it where Debian's server is installed. What the review API and the export rely on: a case comes back as stored,
listings filter and page, reviews keep their history, similar joints are the nearest by embedding, deleted cases
are gone, and the schema is Alembic's to create, upgrade and remove."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from deepxray.cases.database import alembic_config
from deepxray.cases.records import (
    CaseNotFoundError,
    FilmImage,
    InvalidReviewError,
    JointRecord,
    JointReview,
    NewCase,
)
from deepxray.cases.schema import VERSION_TABLE, metadata
from deepxray.cases.store import CaseStore
from deepxray.labels import JOINT_NAMES

pytest_plugins = ["postgres"]

SCORER = "ratingen_score@1.0.0"
MODELS = {"body_part": "body_part@1.0.0", "joint_detection": "joint_detection@1.0.0", "ratingen_score": SCORER}
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DIM = 32
# One direction per grade: a joint's embedding is its grade's direction plus a little noise, so the joints
# nearest to a grade-3 joint are the other grade-3 joints.
CLUSTERS = np.random.default_rng(0).normal(size=(6, DIM)).astype(np.float32)


def hand_answer(laterality: str, scores: list[int], offset: float = 0.0) -> dict:
    joints = {
        name: {
            "score": score,
            "probabilities": [round(0.9 if g == score else 0.02, 4) for g in range(6)],
            "center": [offset + 20.0 + 10 * i, 40.0 + 3 * i],
            "box": [offset + 10.0 * i, 30.0, offset + 10.0 * i + 20, 50.0],
            "confidence": 0.9,
        }
        for i, (name, score) in enumerate(zip(JOINT_NAMES, scores, strict=True))
    }
    box = [offset, 0.0, offset + 150.0, 100.0]
    return {"laterality": laterality, "scores": dict(zip(JOINT_NAMES, scores, strict=True)), "total": sum(scores),
            "joints": joints, "box": box, "confidence": 0.9}  # fmt: skip


def make_case(
    scores: list[list[int]],
    *,
    created_at: datetime = T0,
    models: dict | None = None,
    image: FilmImage | None = None,
    seed: int = 0,
    embeddings: bool = True,
) -> NewCase:
    """A case of one hand (or two: `scores` per hand) with clustered embeddings, as the ingress builds it."""
    rng = np.random.default_rng(seed)
    hands = [hand_answer("LR"[i], hand_scores, offset=200.0 * i) for i, hand_scores in enumerate(scores)]
    models = models or MODELS
    answer = {"scores": hands[0]["scores"], "total": hands[0]["total"],
              "body_part": {"label": "both_hands" if len(hands) > 1 else "left_hand", "probability": 0.97},
              "laterality": "L", "joints": hands[0]["joints"], "hands": hands, "hands_not_scored": [],
              "orientation": {"rotated_deg": 0}, "warnings": [], "models": models, "request_id": f"r{seed}",
              "notice": "research use only"}  # fmt: skip
    joints = [
        JointRecord(
            hand=index,
            laterality=hand["laterality"],
            joint=name,
            score=joint["score"],
            probabilities=joint["probabilities"],
            center=tuple(joint["center"]),
            embedding=(CLUSTERS[joint["score"]] + rng.normal(scale=0.3, size=DIM)).astype(np.float32)
            if embeddings
            else None,
        )
        for index, hand in enumerate(hands)
        for name, joint in hand["joints"].items()
    ]
    answer["case_id"] = case_id = f"{seed:032x}"
    return NewCase(answer, models, (400, 100), joints, image, "a1b2c3" * 4, None, case_id, created_at)


@pytest.fixture()
def store(case_store_url):
    with CaseStore.open(case_store_url) as opened:
        yield opened


def backend(request) -> str:
    return request.node.callspec.params["case_store_url"]


def test_a_case_comes_back_as_stored(store):
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
    case = make_case([[0, 1, 2, 3, 4, 5, 0, 1, 2, 3], [5] * 10], image=FilmImage(png, "preview", 0.25), seed=1)
    assert store.add(case) == case.case_id
    got = store.get(case.case_id)
    assert got.answer == case.answer
    assert got.models == MODELS
    assert got.created_at == T0 and got.created_at.tzinfo is not None
    assert got.film_size == (400, 100)
    assert (got.study_id, got.series_id, got.image_kind) == ("a1b2c3" * 4, None, "preview")
    assert not got.reviewed and got.reviewer is None and got.history == []
    assert [(j.hand, j.laterality, j.joint, j.score) for j in got.joints] == [
        (j.hand, j.laterality, j.joint, j.score) for j in case.joints
    ]
    assert got.joints[3].probabilities == case.joints[3].probabilities
    assert got.joints[13].center == case.joints[13].center
    assert all(j.review is None for j in got.joints)
    embeddings = store.embeddings(case.case_id)
    assert len(embeddings) == 20
    np.testing.assert_array_equal(embeddings[(1, "pip2")], case.joints[16].embedding)
    assert store.image(case.case_id) == FilmImage(png, "preview", 0.25)


def test_a_case_without_image_or_embeddings(store):
    case = make_case([[1] * 10], embeddings=False, seed=2)
    store.add(case)
    assert store.image(case.case_id) is None
    assert store.get(case.case_id).image_kind is None
    assert store.embeddings(case.case_id) == {}
    with pytest.raises(InvalidReviewError, match="no embedding"):
        store.similar(case.case_id, 0, "mcp1")


def test_unknown_cases_are_not_found(store):
    for call in (store.get, store.image, store.delete, lambda case_id: store.similar(case_id, 0, "mcp1"),
                 lambda case_id: store.review(case_id, "alice", [JointReview(0, "mcp1", "accepted", None)])):  # fmt: skip
        with pytest.raises(CaseNotFoundError):
            call("f" * 32)


def test_listing_filters_and_pages_newest_first(store):
    newer_scorer = {**MODELS, "ratingen_score": "ratingen_score@1.1.0", "body_part": "body_part@2.0.0"}
    for i in range(6):
        models = newer_scorer if i >= 4 else MODELS
        store.add(make_case([[i % 6] * 10], created_at=T0 + timedelta(hours=i), models=models, seed=10 + i))
    ids = [f"{10 + i:032x}" for i in range(6)]
    store.review(ids[1], "alice", [JointReview(0, "mcp1", "corrected", 3)])
    store.review(ids[4], "bob", [JointReview(0, "pip5", "accepted", 4)])

    everything = store.list_cases()
    assert everything.total == 6
    assert [item.case_id for item in everything.items] == ids[::-1]
    newest = everything.items[0]
    assert (newest.body_part, newest.hands, newest.total, newest.models) == ("left_hand", 1, 50, newer_scorer)
    assert newest.reviewed is False and newest.reviewed_at is None

    reviewed = store.list_cases(reviewed=True)
    assert [(item.case_id, item.reviewer) for item in reviewed.items] == [(ids[4], "bob"), (ids[1], "alice")]
    assert all(item.reviewed and item.reviewed_at is not None for item in reviewed.items)
    assert store.list_cases(reviewed=False).total == 4

    window = store.list_cases(since=T0 + timedelta(hours=1), until=T0 + timedelta(hours=3))
    assert [item.case_id for item in window.items] == [ids[2], ids[1]]  # since: at or after; until: before
    assert store.list_cases(since=T0 + timedelta(hours=5, minutes=1)).total == 0

    assert {item.case_id for item in store.list_cases(model="ratingen_score@1.1.0").items} == set(ids[4:])
    assert store.list_cases(model="ratingen_score@1.0.0").total == 4
    assert store.list_cases(model="body_part@2.0.0").total == 2
    assert store.list_cases(model="body_part@2.0").total == 0  # a whole tag, not a prefix
    assert store.list_cases(model="ratingen_score@9").total == 0

    pages = [store.list_cases(limit=4, offset=offset) for offset in (0, 4, 8)]
    assert [page.total for page in pages] == [6, 6, 6]
    assert [item.case_id for page in pages for item in page.items] == ids[::-1]
    assert len(pages[2].items) == 0
    combined = store.list_cases(reviewed=False, model=SCORER, limit=2, offset=1)
    assert combined.total == 3 and [item.case_id for item in combined.items] == [ids[2], ids[0]]


def test_reviews_keep_their_history(store):
    case = make_case([[2] * 10, [1] * 10], seed=20)
    store.add(case)
    first = store.review(
        case.case_id,
        "alice",
        [JointReview(0, "mcp1", "accepted", None, "fine"), JointReview(1, "pip3", "corrected", 4, "erosion missed")],
    )
    assert first.reviewed and first.reviewer == "alice"
    joints = {(j.hand, j.joint): j for j in first.joints}
    assert (joints[0, "mcp1"].review.decision, joints[0, "mcp1"].review.score) == ("accepted", 2)
    assert joints[1, "pip3"].review.score == 4 and joints[1, "pip3"].score == 1  # the model's grade stays
    assert joints[1, "pip3"].review.comment == "erosion missed"
    assert joints[0, "mcp2"].review is None

    second = store.review(
        case.case_id,
        "bob",
        [JointReview(1, "pip3", "corrected", 3), JointReview(0, "mcp2", "corrected", 2, "same as the model")],
    )
    assert (second.reviewer, second.reviewed_at) != (first.reviewer, first.reviewed_at)
    assert second.reviewed_at >= first.reviewed_at
    joints = {(j.hand, j.joint): j for j in second.joints}
    assert (joints[1, "pip3"].review.score, joints[1, "pip3"].review.reviewer) == (3, "bob")
    assert (joints[0, "mcp2"].review.decision, joints[0, "mcp2"].review.score) == ("corrected", 2)
    assert joints[0, "mcp1"].review.reviewer == "alice"  # not named again: kept
    history = [(e.reviewer, e.hand, e.joint, e.decision, e.score, e.comment) for e in second.history]
    assert history == [
        ("alice", 0, "mcp1", "accepted", 2, "fine"),
        ("alice", 1, "pip3", "corrected", 4, "erosion missed"),
        ("bob", 1, "pip3", "corrected", 3, None),
        ("bob", 0, "mcp2", "corrected", 2, "same as the model"),
    ]
    times = [event.at for event in second.history]
    assert times == sorted(times) and times[0] == first.reviewed_at and times[-1] == second.reviewed_at
    assert store.get(case.case_id) == second


INVALID_REVIEWS = [
    ([], "at least one joint"),
    ([JointReview(0, "mcp9", "accepted", None)], "no joint mcp9"),
    ([JointReview(1, "mcp1", "corrected", 2)], "no joint mcp1 on hand 1"),
    ([JointReview(0, "mcp1", "corrected", 6)], "0..5"),
    ([JointReview(0, "mcp1", "corrected", -1)], "0..5"),
    ([JointReview(0, "mcp1", "corrected", None)], "0..5"),
    ([JointReview(0, "mcp1", "accepted", 4)], "a correction"),
    ([JointReview(0, "mcp1", "rejected", 2)], "accepted or corrected"),
    ([JointReview(0, "pip1", "accepted", None), JointReview(0, "pip1", "corrected", 1)], "twice"),
]


def test_invalid_reviews_are_refused_whole(store):
    case = make_case([[2] * 10], seed=30)
    store.add(case)
    for joints, message in INVALID_REVIEWS:
        # A valid joint first: a refused review records nothing at all.
        with pytest.raises(InvalidReviewError, match=message):
            store.review(case.case_id, "alice", [JointReview(0, "mcp3", "corrected", 5), *joints] if joints else [])
    with pytest.raises(InvalidReviewError, match="reviewer"):
        store.review(case.case_id, "", [JointReview(0, "mcp3", "corrected", 5)])
    stored = store.get(case.case_id)
    assert not stored.reviewed and stored.history == [] and all(j.review is None for j in stored.joints)


def test_similar_joints_are_the_nearest_of_other_cases(store, request):
    expected_method = {"postgresql": "pgvector"}.get(backend(request), "numpy")
    assert store.similarity_method == expected_method
    for seed in range(40, 46):  # each case: grades 0..5 over its joints
        store.add(make_case([[(seed + i) % 6 for i in range(10)]], seed=seed))
    other_scorer = {**MODELS, "ratingen_score": "ratingen_score@2.0.0"}
    store.add(make_case([[3] * 10], models=other_scorer, seed=49))  # same directions, another scorer version
    query_case = f"{40:032x}"
    query = store.get(query_case).joints[3]  # grade (40 + 3) % 6 = 1
    found = store.similar(query_case, 0, query.joint, k=5)
    assert len(found) == 5
    assert all(item.score == 1 and item.case_id != query_case for item in found)
    assert all(item.case_id != f"{49:032x}" for item in found)
    similarities = [item.similarity for item in found]
    assert similarities == sorted(similarities, reverse=True) and 0.5 < similarities[-1] <= similarities[0] <= 1.0
    assert all(item.reviewed_score is None and item.decision is None for item in found)

    # Reviews show with the joints found; a joint added after the first search is found too.
    target = found[0]
    store.review(target.case_id, "alice", [JointReview(target.hand, target.joint, "corrected", 2)])
    store.add(make_case([[1] * 10], seed=47))
    again = store.similar(query_case, 0, query.joint, k=20)
    assert (again[0].case_id, again[0].reviewed_score, again[0].decision) == (target.case_id, 2, "corrected")
    assert sum(item.case_id == f"{47:032x}" for item in again) == 10

    with pytest.raises(InvalidReviewError, match="no joint pip9"):
        store.similar(query_case, 0, "pip9")
    with pytest.raises(InvalidReviewError, match="no joint mcp1 on hand 1"):
        store.similar(query_case, 1, "mcp1")


def test_a_deleted_case_is_never_similar(store, case_store_url):
    for seed in range(50, 54):
        store.add(make_case([[2] * 10], seed=seed))
    query_case = f"{50:032x}"
    assert {item.case_id for item in store.similar(query_case, 0, "mcp1", k=30)} == {
        f"{seed:032x}" for seed in (51, 52, 53)
    }
    store.delete(f"{51:032x}")
    assert f"{51:032x}" not in {item.case_id for item in store.similar(query_case, 0, "mcp1", k=30)}
    # Deleted through another store (another replica, the CLI): this store's ranking must not return it either.
    with CaseStore.open(case_store_url) as elsewhere:
        elsewhere.delete(f"{52:032x}")
    found = store.similar(query_case, 0, "mcp1", k=3)
    assert [item.case_id for item in found] == [f"{53:032x}"] * 3


def test_embeddings_that_point_nowhere_are_never_similar(store):
    blank = make_case([[2] * 10], seed=55)
    blank = NewCase(**{**blank.__dict__, "joints": [
        JointRecord(j.hand, j.laterality, j.joint, j.score, j.probabilities, j.center, np.zeros(DIM, np.float32))
        for j in blank.joints
    ]})  # fmt: skip
    store.add(blank)
    store.add(make_case([[2] * 10], seed=56))
    assert store.similar(f"{56:032x}", 0, "mcp1", k=50) == []  # the only other joints point nowhere
    store.add(make_case([[2] * 10], seed=57))
    found = store.similar(f"{56:032x}", 0, "mcp1", k=50)
    assert {item.case_id for item in found} == {f"{57:032x}"} and len(found) == 10
    with pytest.raises(InvalidReviewError, match="no embedding"):
        store.similar(blank.case_id, 0, "mcp1")


def test_numpy_and_pgvector_rank_alike(postgres_servers):
    with (
        postgres_servers["postgresql"].database() as url,
        CaseStore.open(url) as in_database,
        CaseStore.open(url, use_pgvector=False) as numpy,
    ):
        assert (in_database.similarity_method, numpy.similarity_method) == ("pgvector", "numpy")
        for seed in range(60, 70):
            in_database.add(make_case([[(seed * 7 + i) % 6 for i in range(10)]], seed=seed))
        for joint in ("mcp1", "pip4"):
            ranked = [in_database.similar(f"{60:032x}", 0, joint, k=25), numpy.similar(f"{60:032x}", 0, joint, k=25)]
            assert [(s.case_id, s.joint) for s in ranked[0]] == [(s.case_id, s.joint) for s in ranked[1]]
            np.testing.assert_allclose([s.similarity for s in ranked[0]], [s.similarity for s in ranked[1]], atol=1e-5)


def test_delete_and_delete_all(store):
    cases = [make_case([[1] * 10], image=FilmImage(b"png", "original", 1.0), seed=seed) for seed in range(70, 73)]
    for case in cases:
        store.add(case)
    store.review(cases[0].case_id, "alice", [JointReview(0, "mcp1", "corrected", 4)])
    store.delete(cases[0].case_id)
    for call in (store.get, store.image, store.delete):
        with pytest.raises(CaseNotFoundError):
            call(cases[0].case_id)
    assert store.embeddings(cases[0].case_id) == {}
    assert store.list_cases().total == 2
    assert store.delete_all() == 2
    assert store.list_cases().total == 0 and store.delete_all() == 0


def test_schema_comes_from_the_migrations(case_store_url, request):
    with CaseStore.open(case_store_url) as store:
        store.add(make_case([[1] * 10], seed=80))
    engine = sa.create_engine(case_store_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar_one() == "0001"
            tables = set(sa.inspect(connection).get_table_names())
            assert {"cases", "case_images", "case_joints", "case_reviews"} <= tables
            # The migration and the tables the store uses say the same (pgvector's column is the migration's own).
            differences = compare_metadata(
                MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}), metadata
            )
            assert [d for d in differences if not (d[0] == "remove_column" and d[3].name == "embedding_vector")] == []
            columns = {column["name"] for column in sa.inspect(connection).get_columns("case_joints")}
            assert ("embedding_vector" in columns) == (backend(request) == "postgresql")

        # Opening it again changes nothing; Alembic's own upgrade is a no-op, its downgrade removes everything.
        with CaseStore.open(case_store_url) as store:
            assert store.list_cases().total == 1
        config = alembic_config(case_store_url)
        command.upgrade(config, "head")
        command.downgrade(config, "base")
        with engine.connect() as connection:
            assert set(sa.inspect(connection).get_table_names()) <= {VERSION_TABLE}
        command.upgrade(config, "head")
        with CaseStore.open(case_store_url) as store:
            assert store.list_cases().total == 0
    finally:
        engine.dispose()


def test_threads_and_replicas_write_one_sqlite_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'cases.sqlite'}"
    replicas = [CaseStore.open(url), CaseStore.open(url)]  # two ingress replicas on one machine
    errors = []

    def work(worker: int) -> None:
        try:
            replica = replicas[worker % 2]
            for n in range(8):
                case = make_case([[n % 6] * 10], seed=1000 + worker * 100 + n)
                replica.add(case)
                replica.review(case.case_id, f"reviewer{worker}", [JointReview(0, "mcp1", "corrected", 5)])
                replica.list_cases(limit=5)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert replicas[0].list_cases(reviewed=True).total == 48
        assert len(replicas[1].similar(f"{1000:032x}", 0, "mcp2", k=100)) == 100
    finally:
        for replica in replicas:
            replica.close()
