"""Vision-language reranking on a tiny random Qwen2-VL: scores equal a plain transformers forward, batch and order
invariance with images of different sizes, the pixel budget, media errors, interleaved parts, MM-R5 listwise parsing
and repair, the generation backend against model.generate, saving, page rendering, and both adapters."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import reason2rank  # noqa: E402
from reason2rank import Doc, Query  # noqa: E402
from reason2rank.llm.backend import GenerationResult  # noqa: E402
from reason2rank.media import ImageRef, MediaError  # noqa: E402
from tiny_vlm import make_tiny_qwen2_vl, png_bytes, random_image  # noqa: E402


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory) -> str:
    return str(make_tiny_qwen2_vl(tmp_path_factory.mktemp("tiny_qwen2_vl")))


@pytest.fixture(scope="module")
def vlm(vlm_dir):
    return reason2rank.load(vlm_dir, family="vlm", dtype="fp32", progress=False, batch_size=4)


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pages")
    for i, (h, w) in enumerate([(80, 60), (140, 100), (60, 200), (100, 100)]):
        random_image(h, w, seed=i).save(root / f"p{i}.png")
    return root


def _docs(pages: Path) -> list[Doc]:
    return [
        Doc("a", None, images=[str(pages / "p0.png")]),
        Doc("b", "water treatment data", images=[png_bytes(random_image(140, 100, 1))]),
        Doc("c", "plain text about health"),
        Doc("d", None, images=[random_image(60, 200, 2), str(pages / "p3.png")]),
    ]


def _plain_score(model_dir: str, vlm, query: str, doc: Doc) -> float:
    """logit(yes) − logit(no) of a plain transformers forward of Qwen2-VL's own processor output (the image-only
    processor is Qwen2-VL's ``__call__``: its image-token expansion and pixels, not reason2rank's encoding)."""
    from transformers import AutoModelForImageTextToText

    from reason2rank.scorers.image_only_processor import ImageOnlyQwen2VLProcessor

    hf = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    msgs, refs, _ = vlm.messages(query, vlm.document_parts(doc))
    images = [r.load() for r in refs]
    proc = ImageOnlyQwen2VLProcessor(
        vlm.inputs.image_processor, vlm.inputs.tokenizer, vlm.inputs.chat_template
    )
    size = {"shortest_edge": vlm.budget.min_pixels, "longest_edge": vlm.budget.max_pixels}
    batch = proc(images=images or None, text=[vlm.inputs.render(msgs)], return_tensors="pt",
                 images_kwargs={"size": size})  # fmt: skip
    with torch.no_grad():
        logits = hf(**batch).logits[0, -1]
    return float(logits[vlm.positive_id] - logits[vlm.negative_id])


def test_scores_equal_a_plain_transformers_forward(vlm_dir, vlm, pages):
    docs = _docs(pages)
    got = {sd.doc.id: sd.score for sd in vlm.rerank("water health", docs)}
    for d in docs:
        assert got[d.id] == pytest.approx(_plain_score(vlm_dir, vlm, "water health", d), abs=1e-5)


def test_a_large_call_holds_one_chunk_of_pages_at_a_time(vlm_dir, pages, monkeypatch):
    """Prompts are encoded (pixels loaded) CHUNK_BATCHES × batch_size at a time, with the same scores as one run."""
    from reason2rank.scorers import vlm as vlm_module

    items = [
        (Query(f"q{i}", w), _docs(pages)) for i, w in enumerate(["water", "health", "data"])
    ]  # 12 prompts
    whole = reason2rank.load(vlm_dir, family="vlm", dtype="fp32", batch_size=16, progress=False)
    expected = [s.tolist() for s in whole.score_batch(items)]
    small = reason2rank.load(vlm_dir, family="vlm", dtype="fp32", batch_size=2, progress=False)
    monkeypatch.setattr(vlm_module, "CHUNK_BATCHES", 2)  # chunks of 4 prompts
    seen = []
    features = small.features
    monkeypatch.setattr(small, "features", lambda pairs: seen.append(len(pairs)) or features(pairs))
    got = [s.tolist() for s in small.score_batch(items)]
    assert seen == [4, 4, 4]
    for a, b in zip(got, expected):
        assert a == pytest.approx(b, abs=1e-5)


def test_image_tokens_follow_the_patch_grid_and_the_pixel_budget(vlm):
    msgs, refs, _ = vlm.messages("q", [ImageRef(image=random_image(400, 300, 5))])
    f = vlm.inputs.encode(msgs, [r.load() for r in refs], vlm.budget)
    ((t, h, w),) = f["image_grid_thw"]
    n_image = sum(f["mm_token_type_ids"])
    assert n_image == t * h * w // 4 == f["input_ids"].count(vlm.inputs.image_token_id)
    assert f["pixel_values"].shape[0] == t * h * w
    assert vlm.budget.min_pixels <= h * w * 14 * 14 <= vlm.budget.max_pixels
    small = reason2rank.load(vlm.model_name_or_path, family="vlm", dtype="fp32", max_pixels=28 * 28 * 8)
    f2 = small.inputs.encode(msgs, [r.load() for r in refs], small.budget)
    assert sum(f2["mm_token_type_ids"]) <= 8 < n_image


def test_batch_and_order_invariance_with_images_of_different_sizes(vlm_dir, vlm, pages):
    docs = _docs(pages)
    one = reason2rank.load(vlm_dir, family="vlm", dtype="fp32", batch_size=1)
    a = {sd.doc.id: sd.score for sd in vlm.rerank("water", docs)}
    b = {sd.doc.id: sd.score for sd in one.rerank("water", docs[::-1])}
    c = [{sd.doc.id: sd.score for sd in r} for r in vlm.rerank_batch([("water", docs), ("health", docs[1:])])]
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-5)
        assert a[k] == pytest.approx(c[0][k], abs=1e-5)


def test_identical_pages_are_computed_once(vlm, pages):
    calls = []
    forward = vlm.forward

    def counting(batch):
        calls.append(batch["input_ids"].shape[0])
        return forward(batch)

    vlm.forward = counting
    try:
        same = [Doc(str(i), None, images=[str(pages / "p1.png")]) for i in range(3)]
        scores = [sd.score for sd in vlm.rerank("q", same)]
    finally:
        del vlm.forward
    assert sum(calls) == 1 and len(set(scores)) == 1


def test_media_errors_name_the_document(vlm_dir, pages, tmp_path):
    strict = reason2rank.load(vlm_dir, family="vlm", dtype="fp32", image_root=str(pages))
    with pytest.raises(MediaError, match=r"document 'x'.*does not exist"):
        strict.rerank("q", [Doc("x", None, images=[str(pages / "missing.png")])])
    outside = tmp_path / "secret.png"
    random_image(30, 30).save(outside)
    with pytest.raises(MediaError, match=r"document 'y'.*outside the allowed root"):
        strict.rerank("q", [Doc("y", None, images=[str(pages / ".." / outside.parent.name / "secret.png")])])
    with pytest.raises(MediaError, match=r"document 'z'.*not an image Pillow can read"):
        strict.rerank("q", [Doc("z", None, images=[b"GIF89a but not really"])])
    with pytest.raises(MediaError, match=r"document 'v'.*not a PDF pypdfium2 can read"):
        strict.rerank("q", [Doc("v", None, images=[b"%PDF-1.7 truncated"])])
    with pytest.raises(MediaError, match="cannot use a int as an image"):
        Doc("w", None, images=[3])
    with pytest.raises(MediaError, match=r"document 'u'.*cannot use a int as an image"):
        Doc("u", None, images=3)  # one value that is not an image: named, not "int is not iterable"
    # one image given without a list: a path, a Path, a PIL image (as one str or bytes already was)
    one = random_image(30, 30)
    for single in (str(pages / "p0.png"), pages / "p0.png", one):
        assert len(Doc("s", None, images=single).images) == 1


def test_text_families_rank_image_only_documents_last(tiny_bert_dir, pages):
    text_model = reason2rank.load(tiny_bert_dir, family="cross-encoder")
    with pytest.warns(UserWarning, match="1 document"):
        out = text_model.rerank(
            "q", [Doc("img", None, images=[str(pages / "p0.png")]), Doc("t", "some text")]
        )
    assert [sd.doc.id for sd in out] == ["t", "img"]


def test_save_then_load_gives_the_same_scores(vlm, pages, tmp_path):
    docs = _docs(pages)
    before = [sd.score for sd in vlm.rerank("water", docs)]
    again = reason2rank.load(vlm.save(tmp_path / "saved"))
    assert again.family == "vlm" and again.budget == vlm.budget
    assert [sd.score for sd in again.rerank("water", docs)] == pytest.approx(before, abs=1e-6)


def test_best_part_of_an_interleaved_document_is_its_score_and_evidence(vlm_dir, vlm):
    parted = reason2rank.load(vlm_dir, family="vlm", dtype="fp32", parts="best")
    img = ImageRef(image=random_image(70, 70, 9), name="figure 1")
    doc = Doc("x", None, parts=["a passage about cats", img, "water treatment plants"])
    alone = [sd.score for sd in (vlm.rerank("water", [Doc(str(i), p if isinstance(p, str) else None,
                                                          images=[] if isinstance(p, str) else [p])])[0]
                                  for i, p in enumerate(doc.parts))]  # fmt: skip
    [sd] = parted.rerank("water", [doc], explain=1)
    best = int(np.argmax(alone))
    assert sd.score == pytest.approx(alone[best], abs=1e-5)
    assert sd.evidence == (doc.parts[best] if isinstance(doc.parts[best], str) else "figure 1")
    whole = vlm.rerank("water", [doc])[0]  # the whole interleaved sequence, one prompt
    assert whole.score != pytest.approx(sd.score)


def test_vlm_listwise_puts_images_in_their_slots_and_parses_and_repairs(vlm_dir, pages):
    ranker = reason2rank.load(vlm_dir, family="vlm-listwise", dtype="fp32", window=3, stride=3)
    docs = _docs(pages)[:3]
    msgs = ranker.window_messages(Query("q", "water"), docs, 64)
    parts = [c for m in msgs if not isinstance(m["content"], str) for c in m["content"]]
    images = [c["image"] for c in parts if c["type"] == "image"]
    assert images == [docs[0].images[0], docs[1].images[0]]
    text = "".join(c.get("text", "<IMG>") for c in parts)
    assert text.index("Image 1:") < text.index("<IMG>") < text.index("Image 2:") < text.index("Image 3:")
    assert "plain text about health" in text
    answers = iter(["<think>page 3 names health</think><answer>[3, 1, 2]</answer>",
                    "<answer>[2,2,2]</answer>"])  # fmt: skip

    def scripted(messages, **kw):
        return [GenerationResult(text=next(answers)) for _ in messages]

    ranker.llm.backend.generate = scripted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, second = ranker.rerank_batch([("health", docs), ("water", docs)])
    assert [sd.doc.id for sd in first] == ["c", "a", "b"] and first[0].doc.id == "c"
    assert first.info["windows_repaired"] == 0
    assert [sd.doc.id for sd in second] == ["b", "a", "c"]  # duplicates dropped, missing appended in order
    assert second.info["windows_repaired"] == 1


def test_a_part_selector_chooses_the_parts_the_vlm_reads(vlm_dir, tmp_path):
    """top_parts=2 with a vlm-embed selector: the VLM scores only each document's two parts the selector ranks
    highest (the cascade's selection); the score is the best of those, and the setting saves and reopens."""
    from reason2rank.cascade import select_top
    from reason2rank.scorers.vlm_embed import VLMEmbedder

    img = ImageRef(image=random_image(70, 70, 9), name="figure 1")
    doc = Doc("x", None, parts=["a passage about cats", img, "water treatment plants", "rain and rivers"])
    short = Doc("y", "water only")  # one part: nothing to select
    embedder = VLMEmbedder(vlm_dir, dtype="fp32", progress=False)
    [cos] = embedder.score_windows([("water", list(doc.parts))])
    cos_check = [float(embedder.rerank("water", [Doc("p", p) if isinstance(p, str) else Doc("p", None, images=[p])])[0].score)
                 for p in doc.parts]  # fmt: skip
    assert cos.tolist() == pytest.approx(cos_check, abs=1e-5)  # each part's cosine, as a one-part document
    keep = select_top(cos, 2)
    ranker = reason2rank.load(
        vlm_dir, family="vlm", dtype="fp32", parts="best", top_parts=2, part_selector=vlm_dir
    )
    seen = []
    score_prompts = ranker.score_prompts
    ranker.score_prompts = lambda pairs, desc: seen.extend(pairs) or score_prompts(pairs, desc)
    out = ranker.rerank("water", [doc, short], explain=1)
    assert [parts[0] for _, parts, _ in seen] == [doc.parts[i] for i in keep] + ["water only"]
    assert out.info["parts_scored"] == 3
    allparts = reason2rank.load(vlm_dir, family="vlm", dtype="fp32", parts="best")
    kept_doc = Doc("x", None, parts=[doc.parts[i] for i in keep])
    assert {sd.doc.id: sd.score for sd in out}["x"] == pytest.approx(
        allparts.rerank("water", [kept_doc])[0].score
    )
    again = reason2rank.load(ranker.save(tmp_path / "selected"))
    assert (again.top_parts, again.part_selector_path) == (2, vlm_dir)
    with pytest.raises(ValueError, match="top_parts needs a part_selector"):
        reason2rank.load(vlm_dir, family="vlm", parts="best", top_parts=2)
    with pytest.raises(ValueError, match="needs parts='best'"):
        reason2rank.load(vlm_dir, family="vlm", top_parts=2, part_selector=vlm_dir)


def test_table_parts_are_read_as_markdown_in_reading_order(vlm, pages):
    import pandas as pd

    doc = Doc("t", None, parts=["incidence by year", {"table": [["year", "cases"], [2019, 12], [2020, "n|a"]]},
                                pages / "p1.png"])  # fmt: skip
    table = "| year | cases |\n|---|---|\n| 2019 | 12 |\n| 2020 | n\\|a |"
    assert doc.parts[1] == table
    frame = pd.DataFrame({"year": [2019, 2020], "cases": [12, "n|a"]})
    assert Doc("f", None, parts=[frame]).parts == (table,)
    assert (
        Doc("h", None, parts=[{"table": [[2019, 12]], "header": ["year", "cases"]}])
        .parts[0]
        .startswith("| year | cases |\n|---|---|\n| 2019 | 12 |")
    )
    msgs, refs, _ = vlm.messages("cases", vlm.document_parts(doc))
    content = [c for m in msgs for c in m["content"]]
    where = [i for i, c in enumerate(content) if c["type"] == "text" and table in c["text"]]
    image = [i for i, c in enumerate(content) if c["type"] == "image"]
    assert len(where) == 1 and len(image) == 1 and where[0] < image[0] and refs == [doc.parts[2]]
    with pytest.raises(MediaError, match=r"document 'r'.*as many cells as its header \(2\)"):
        Doc("r", None, parts=[{"table": [["a", "b"], [1]]}])
    with pytest.raises(MediaError, match=r"document 's'.*non-empty list of rows"):
        Doc("s", None, parts=[{"table": "a,b"}])


def test_vlm_listwise_shows_an_interleaved_document_in_its_reading_order(vlm_dir, pages):
    ranker = reason2rank.load(vlm_dir, family="vlm-listwise", dtype="fp32", window=2, stride=2, max_words=3)
    page = _docs(pages)[0]
    mixed = Doc("m", None, parts=["intro words before the figure", pages / "p1.png", "closing words", ""])
    msgs = ranker.window_messages(Query("q", "water"), [page, mixed], 64)
    parts = [c for m in msgs if not isinstance(m["content"], str) for c in m["content"]]
    assert [c["image"] for c in parts if c["type"] == "image"] == [page.images[0], mixed.parts[1]]
    text = "".join(c.get("text", "<IMG>") for c in parts)
    slot = text[text.index("Image 2:") :]
    assert slot.index("intro words before") < slot.index("<IMG>") < slot.index("closing words")
    assert "the figure" not in slot  # each text part cut to max_words=3


def test_vision_backend_greedy_answers_equal_model_generate(vlm_dir, vlm):
    from transformers import AutoModelForImageTextToText

    ranker = reason2rank.load(vlm_dir, family="vlm-listwise", dtype="fp32", max_new_tokens=6)
    backend = ranker.llm.backend
    img = ImageRef(image=random_image(90, 70, 4))
    conv = [
        {"role": "user", "content": [{"type": "text", "text": "what is it"}, {"type": "image", "image": img}]}
    ]
    [res] = backend.generate([conv], max_new_tokens=6)
    hf = AutoModelForImageTextToText.from_pretrained(vlm_dir, dtype=torch.float32).eval()
    feats = vlm.inputs.encode([{"role": "user", "content": [{"type": "text", "text": "what is it"}, {"type": "image"}]}],
                              [img.load()], backend.budget)  # fmt: skip
    batch = vlm.inputs.collate([feats])
    out = hf.generate(
        **batch, max_new_tokens=6, do_sample=False, eos_token_id=hf.generation_config.eos_token_id
    )
    new = out[0, batch["input_ids"].shape[1] :].tolist()
    assert res.completion_tokens == len(
        [t for t in new if t not in (hf.generation_config.eos_token_id or [])][:6]
    )
    assert res.text == vlm.inputs.tokenizer.decode(new[: res.completion_tokens], skip_special_tokens=True)


def test_render_pages_and_page_qrels(tmp_path):
    from PIL import Image

    from reason2rank.data.pages import page_qrels, render_pages

    docs = [
        Doc(f"d{i}", f"Study {i} measured 12 of 40 patients and 7.5 percent", title=f"Title {i}")
        for i in range(5)
    ]
    pages = render_pages(docs, tmp_path, per_page=2, figure_every=2)
    assert [p.doc_ids for p in pages] == [("d0", "d1"), ("d2", "d3"), ("d4",)]
    assert [p.has_figure for p in pages] == [False, True, False]
    assert Image.open(pages[0].path).size == (640, 828)
    assert "Title 0" in pages[0].text and "Study 1 measured" in pages[0].text
    assert (tmp_path / "pages.jsonl").read_text().count("\n") == 3
    assert page_qrels(pages, {"q": {"d1": 1, "d0": 2, "d4": 0, "zz": 1}}) == {"q": {"page00000": 2}}


def test_haystack_ranker_reads_blob_file_path_and_image_contents(vlm_dir, vlm, pages):
    from haystack import Document, Pipeline
    from haystack.dataclasses import ByteStream, ImageContent

    from haystack_integrations.components.rankers.reason2rank import R2RRanker

    ranker = R2RRanker(model=vlm_dir, model_kwargs={"family": "vlm", "dtype": "fp32"}, image_root=str(pages),
                       top_k=4)  # fmt: skip
    blob = png_bytes(random_image(140, 100, 1))
    docs = [Document(content=None, meta={"file_path": "p0.png"}),
            Document(content="water treatment data", blob=ByteStream(blob, mime_type="image/png")),
            Document(content="plain text about health"),
            Document(content=None)]  # fmt: skip
    contents = [None, None, None, ImageContent.from_file_path(str(pages / "p3.png"))]
    got = ranker.run(query="water health", documents=docs, image_contents=contents)["documents"]
    core = vlm.rerank("water health", [Doc("0", None, images=[str(pages / "p0.png")]),
                                       Doc("1", "water treatment data", images=[blob]),
                                       Doc("2", "plain text about health"),
                                       Doc("3", None, images=[str(pages / "p3.png")])])  # fmt: skip
    assert [d.score for d in got] == pytest.approx([sd.score for sd in core], abs=1e-5)
    with pytest.raises(MediaError, match="outside the allowed root"):
        ranker.run(query="q", documents=[Document(content=None, meta={"file_path": "../x.png"})])
    # a PDF page, rendered with pypdfium2 (page_number is 1-based, as Haystack's converters write it)
    first, second = random_image(200, 150, 11), random_image(150, 200, 12)
    first.save(pages / "paper.pdf", save_all=True, append_images=[second])
    pdf_doc = Document(content=None, meta={"file_path": "paper.pdf", "page_number": 2})
    [got_pdf] = ranker.run(query="water", documents=[pdf_doc])["documents"]
    [want_pdf] = vlm.rerank(
        "water", [Doc("p", None, images=[ImageRef(path=str(pages / "paper.pdf"), page=2)])]
    )
    assert got_pdf.score == pytest.approx(want_pdf.score, abs=1e-5)
    page_one = vlm.rerank("water", [Doc("p", None, images=[ImageRef(path=str(pages / "paper.pdf"), page=1)])])
    assert page_one[0].score != pytest.approx(want_pdf.score)
    with pytest.raises(MediaError, match="has 2 page"):
        ranker.run(
            query="q", documents=[Document(content=None, meta={"file_path": "paper.pdf", "page_number": 5})]
        )
    pipe = Pipeline()
    pipe.add_component("ranker", ranker)
    again = Pipeline.loads(pipe.dumps()).get_component("ranker")
    assert again.image_root == str(pages) and again.model_kwargs == {"family": "vlm", "dtype": "fp32"}


def test_haystack_pipeline_from_image_contents_round_trips_through_yaml(vlm_dir, vlm, pages):
    """Haystack's own DocumentToImageContent feeds the ranker's image_contents; the pipeline is dumped to YAML,
    loaded back and run: the scores are the core's for the same pages."""
    from haystack import Document, Pipeline
    from haystack.components.converters.image import DocumentToImageContent

    from haystack_integrations.components.rankers.reason2rank import R2RRanker

    pipe = Pipeline()
    pipe.add_component("images", DocumentToImageContent(file_path_meta_field="page", root_path=str(pages)))
    pipe.add_component(
        "ranker", R2RRanker(model=vlm_dir, model_kwargs={"family": "vlm", "dtype": "fp32"}, top_k=3)
    )
    pipe.connect("images.image_contents", "ranker.image_contents")
    restored = Pipeline.loads(pipe.dumps())
    texts = [None, "water treatment data", None, "plain text about health"]
    docs = [Document(id=f"d{i}", content=t, meta={"page": f"p{i}.png"}) for i, t in enumerate(texts)]
    out = restored.run({"images": {"documents": docs}, "ranker": {"query": "water", "documents": docs}})
    got = {d.id: d.score for d in out["ranker"]["documents"]}
    core = vlm.rerank(
        "water", [Doc(f"d{i}", t, images=[str(pages / f"p{i}.png")]) for i, t in enumerate(texts)]
    )
    assert len(got) == 3 and list(got) == [sd.doc.id for sd in core[:3]]  # top_k, in the core's order
    assert got == pytest.approx({sd.doc.id: sd.score for sd in core[:3]}, abs=1e-5)


def test_pyterrier_image_column_and_image_loader(vlm_dir, vlm, pages):
    import pandas as pd

    import pt_r2r
    from pt_r2r.text import MissingDocumentsError

    frame = pd.DataFrame({"qid": ["1"] * 3, "query": ["water"] * 3, "docno": ["p0", "p1", "p2"],
                          "score": [3.0, 2.0, 1.0], "rank": [0, 1, 2]})  # fmt: skip
    pipe = pt_r2r.ImageLoader(pages) >> pt_r2r.R2RReranker(vlm_dir, text_field=None, image_field="image",
                                                          family="vlm", dtype="fp32", verbose=False)  # fmt: skip
    out = pipe(frame)
    core = {sd.doc.id: sd.score for sd in vlm.rerank("water", [Doc(f"p{i}", None, images=[str(pages / f"p{i}.png")])
                                                                 for i in range(3)])}  # fmt: skip
    assert dict(zip(out.docno, out.score)) == pytest.approx(core, abs=1e-5)
    assert list(out["rank"]) == [0, 1, 2]
    with pytest.raises(MissingDocumentsError, match="'nope'"):
        pt_r2r.ImageLoader(pages)(frame.assign(docno=["p0", "nope", "p1"]))
    with pytest.raises(ValueError, match="outside the image directory"):
        pt_r2r.ImageLoader(pages)(frame.assign(docno=["../p0", "p1", "p2"]))


def test_vlm_embedder_merges_part_embeddings_and_scores_by_cosine(vlm_dir):
    from transformers import AutoModelForImageTextToText

    emb = reason2rank.load(vlm_dir, family="vlm-embed", dtype="fp32", batch_size=3)
    img = ImageRef(image=random_image(70, 90, 6))
    doc = Doc("x", None, parts=["a passage about water", img, "heart disease"])
    hf = AutoModelForImageTextToText.from_pretrained(vlm_dir, dtype=torch.float32).eval()

    def plain(prefix, part):
        msgs, refs = emb._messages(prefix, part)
        feats = emb.inputs.encode(msgs, [r.load() for r in refs], emb.budget)
        with torch.no_grad():
            h = hf(**emb.inputs.collate([feats]), output_hidden_states=True).hidden_states[-1][0, -1]
        return torch.nn.functional.normalize(h, dim=-1).numpy()

    parts = np.stack([plain("Document: ", p) for p in doc.parts])
    merged = parts.mean(0) / np.linalg.norm(parts.mean(0))
    np.testing.assert_allclose(emb.embed_documents([doc])[0], merged, atol=1e-5)
    q = plain("Query: ", "water")
    [sd] = emb.rerank("water", [doc])
    assert sd.score == pytest.approx(float(q @ merged), abs=1e-5)
    saved = reason2rank.load(emb.save(Path(vlm_dir).parent / "embed_saved"))
    assert saved.family == "vlm-embed" and saved.rerank("water", [doc])[0].score == pytest.approx(
        sd.score, abs=1e-6
    )


def test_cli_reranks_page_images_named_in_the_docs_jsonl(vlm, pages, tmp_path):
    import json

    from reason2rank.cli import main
    from reason2rank.data import read_trec_run

    model_dir = vlm.save(tmp_path / "cli_model")
    (tmp_path / "docs.jsonl").write_text(
        "".join(
            json.dumps({"_id": f"p{i}", "text": None, "image": str(pages / f"p{i}.png")}) + "\n"
            for i in range(3)
        )
    )
    (tmp_path / "topics.tsv").write_text("1\twater\n")
    (tmp_path / "run.trec").write_text("".join(f"1 Q0 p{i} {i + 1} {3 - i} bm25\n" for i in range(3)))
    out = tmp_path / "out.trec"
    code = main(["rerank", "--model", str(model_dir), "--run", str(tmp_path / "run.trec"), "--topics",
                 str(tmp_path / "topics.tsv"), "--docs", str(tmp_path / "docs.jsonl"), "--out", str(out),
                 "--no-progress"])  # fmt: skip
    assert code == 0
    want = vlm.rerank("water", [Doc(f"p{i}", None, images=[str(pages / f"p{i}.png")]) for i in range(3)])
    assert [d for d, _ in read_trec_run(out)["1"]] == [sd.doc.id for sd in want]


def test_vlm_listwise_saves_and_reopens(vlm_dir, tmp_path):
    ranker = reason2rank.load(
        vlm_dir,
        family="vlm-listwise",
        dtype="fp32",
        window=4,
        stride=2,
        max_pixels=28 * 28 * 16,
        max_new_tokens=8,
    )
    again = reason2rank.load(ranker.save(tmp_path / "listwise"))
    assert type(again).__name__ == "VLMListwiseReranker"
    assert (again.window, again.stride, again.budget) == (4, 2, ranker.budget)
    assert again.prompt.version == "listwise/mm-r5-v1"
    docs = [Doc(f"p{i}", None, images=[random_image(56 + 28 * i, 56, i)]) for i in range(3)]
    before, after = ranker.rerank("water", docs, explain=3), again.rerank("water", docs, explain=3)
    assert [(sd.doc.id, sd.reasoning) for sd in after] == [(sd.doc.id, sd.reasoning) for sd in before]
