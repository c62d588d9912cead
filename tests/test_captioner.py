"""The image-to-text models: tiny BLIP through the real transformers classes, the offline fallback on real
photos, OCR, and the errors a user gets when a model cannot do what was asked."""

import numpy as np
import pytest
import torch
from PIL import Image

from tests.photos import picture
from vlsearch.api.wording import explain
from vlsearch.captioner import GenerationSettings, ModelSuite, NotSupported, load_image_text_model
from vlsearch.captioner.offline import OfflineCaptioner
from vlsearch.captioner.tiny import tiny_blip


@pytest.fixture(scope="module")
def tiny():
    return {task: load_image_text_model("tiny-random", task, device="cpu") for task in ("caption", "answer", "match")}


def test_generate_runs_on_every_blip_class_we_use(tiny):
    """Guard against BLIP breaking under a transformers upgrade: generate() on the captioning and VQA classes
    and the ITM forward pass, through our own code, with batches, prompts and beams."""
    images = [picture(1), picture(2), picture(3)]
    captions = tiny["caption"].caption(images)
    assert len(captions) == 3 and all(isinstance(c, str) and c for c in captions)
    prompted = tiny["caption"].caption(images[:1], prompt="a photo of")
    assert prompted[0].startswith("a photo of")
    answers = tiny["answer"].answer(images[:2], ["is there a cat?", "what colour is the sky?"])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    yes = tiny["answer"].yes_probability(images[:2], ["is there a cat?", "is it red?"])
    assert yes.shape == (2,) and np.all((yes > 0) & (yes < 1))
    scores = tiny["match"].match(images[:2], ["a cat", "a dog on a beach"])
    assert scores.shape == (2,) and np.all((scores > 0) & (scores < 1))


def test_generation_settings_bound_the_caption_length():
    short = load_image_text_model("tiny-random", "caption", device="cpu",
                                  settings=GenerationSettings(max_new_tokens=2, num_beams=1, batch_size=2))
    long = load_image_text_model("tiny-random", "caption", device="cpu",
                                 settings=GenerationSettings(max_new_tokens=12, num_beams=1, batch_size=2))
    images = [picture(s) for s in range(5)]  # more than one batch
    short_captions, long_captions = short.caption(images), long.caption(images)
    assert len(short_captions) == len(long_captions) == 5
    # Each generated token adds at most one word (word pieces join the word before).
    assert all(len(c.split()) <= 2 for c in short_captions) and all(len(c.split()) <= 12 for c in long_captions)
    assert all(len(lc) > len(sc) for sc, lc in zip(short_captions, long_captions, strict=True))
    with pytest.raises(ValueError):
        GenerationSettings(num_beams=0)


def test_checkpoint_folder_loads_and_a_folder_for_another_task_is_refused(tmp_path):
    """The path real weights take (from_pretrained of a folder), exercised with a tiny checkpoint."""
    for task in ("caption", "answer"):
        model, processor = tiny_blip(task)
        model.save_pretrained(tmp_path / task)
        processor.save_pretrained(tmp_path / task)
    loaded = load_image_text_model(str(tmp_path / "caption"), "caption", device="cpu")
    reference = load_image_text_model("tiny-random", "caption", device="cpu")
    assert loaded.caption([picture(4)]) == reference.caption([picture(4)])
    with pytest.raises(ValueError, match="BlipForQuestionAnswering") as wrong:
        load_image_text_model(str(tmp_path / "answer"), "caption", device="cpu")
    assert explain(wrong.value).endswith("pass it as --vqa-model")  # what the CLI says
    with pytest.raises(ValueError, match="unknown model .* for captions") as unknown:
        load_image_text_model(str(tmp_path / "nothing-here"), "caption", device="cpu")
    assert "for --caption-model" in explain(unknown.value)


def test_folder_models_are_named_by_content_and_a_corrupt_one_is_a_clear_error(tmp_path):
    """Captions are keyed by model name: two fine-tunes in folders called `caption` must not share one."""
    from vlsearch.encoders import WeightsUnavailable

    for folder, bump in ((tmp_path / "a" / "caption", 0.0), (tmp_path / "b" / "caption", 0.5)):
        model, processor = tiny_blip("caption")
        with torch.no_grad():
            next(model.parameters()).add_(bump)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    a = load_image_text_model(str(tmp_path / "a" / "caption"), "caption", device="cpu").name
    b = load_image_text_model(str(tmp_path / "b" / "caption"), "caption", device="cpu").name
    assert a.startswith(f"blip:{tmp_path / 'a' / 'caption'}#") and b.startswith(f"blip:{tmp_path / 'b' / 'caption'}#")
    assert a.split("#")[1] != b.split("#")[1]  # the weights' hash, not only the path, tells them apart
    assert load_image_text_model(a, "caption", device="cpu").name == a  # the recorded name loads the folder again
    weights = tmp_path / "b" / "caption" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a download cut short
    with pytest.raises(WeightsUnavailable, match="cannot load BlipForConditionalGeneration.*download it again"):
        load_image_text_model(str(tmp_path / "b" / "caption"), "caption", device="cpu")


def test_missing_blip_weights_say_how_to_get_them_and_auto_falls_back(monkeypatch, tmp_path):
    import vlsearch.captioner.registry
    from vlsearch.encoders import WeightsUnavailable

    monkeypatch.setattr(vlsearch.captioner.registry, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(WeightsUnavailable, match=f"blip-vqa-base.*not on this machine.*in: {tmp_path}") as not_here:
        load_image_text_model("blip-vqa-base", "answer", model_dir=tmp_path, device="cpu")
    assert "`vlsearch models pull blip-vqa-base --model-dir DIR`" in explain(not_here.value)
    assert load_image_text_model("auto", "caption", model_dir=tmp_path, device="cpu").name == "offline"
    with pytest.raises(WeightsUnavailable, match="blip-itm-base"):  # matching has no offline stand-in
        load_image_text_model("auto", "match", model_dir=tmp_path, device="cpu")
    with pytest.raises(ValueError, match="cannot answer questions.*blip-vqa-base") as wrong:
        load_image_text_model("blip-base", "answer", model_dir=tmp_path, device="cpu")
    assert "for --vqa-model use one of: blip-vqa-base" in explain(wrong.value)


@pytest.fixture(scope="module")
def photos():
    from vlsearch.images.samples import sample_photos

    return sample_photos()


@pytest.fixture(scope="module")
def offline():
    return OfflineCaptioner("cpu")


def test_offline_captions_name_what_the_models_really_see(photos, offline):
    chelsea, page, text = offline.caption([photos["chelsea"], photos["page"], photos["text"]])
    assert "cat" in chelsea and "text:" not in chelsea  # an ImageNet cat label, no text on a cat
    assert "text:" in page and "markers" in page  # the scanned page's words, read by OCR
    assert "text:" in text
    prompted = offline.caption([photos["chelsea"]], prompt="a photo of")[0]
    assert prompted.startswith("a photo of ") and "cat" in prompted


def test_ocr_reads_the_page_and_nothing_on_the_cat(offline, photos):
    assert "markers of the coins" in offline.ocr.read(photos["page"])
    assert offline.ocr.read(photos["text"]).strip()
    assert offline.ocr.read(photos["chelsea"]) == ""


def test_ocr_skips_slivers_and_pads_thin_strips(offline, photos):
    """A 3000x2 image once made the detector upscale it to gigabytes; a thin strip of text still reads."""
    for size in ((3000, 2), (800, 1), (2, 3000), (1, 1), (100_000, 10), (60_000, 200)):  # the last two: 24 GB once
        assert offline.ocr.read(Image.new("RGB", size, "white")) == ""
    page = photos["page"].convert("RGB")
    line = page.crop((0, 0, page.width, 40))  # the heading, "Region-based segmentation"
    strip = Image.new("RGB", (page.width * 6, 40), "white")
    strip.paste(line, (0, 0))
    assert "segmentation" in offline.ocr.read(strip)
    assert offline.caption([Image.new("RGB", (3000, 3), "gray")])  # a caption, no OCR error


def test_offline_answers_only_what_ocr_grounds(offline, photos):
    said, = offline.answer([photos["page"]], ["what does it say?"])
    assert "markers of the coins" in said
    assert offline.answer([photos["chelsea"], photos["page"]], ["is there any text?", "is there text?"])[0] == "no"
    assert offline.answer([photos["page"]], ["is there text?"])[0].startswith("yes")
    assert offline.answer([photos["page"]], ["does it say STOP?"])[0].startswith('no: it reads "')
    assert offline.answer([photos["page"]], ["does the page say 'Markers of the coins'?"])[0].startswith("yes")
    assert offline.answer([photos["chelsea"]], ["does the sign say STOP?"]) == ["no: no text found"]
    assert offline.answer([photos["page"]], ["does it say coins?"])[0].startswith("yes")
    assert offline.answer([photos["page"]], ["does it say coin?"])[0].startswith("no")  # whole words only
    assert "markers of the coins" in offline.answer([photos["page"]], ["what is the text?"])[0]
    for question in ("is there a cat?", "what colour is the text?", "is there a sign?", "what is this?",
                     "is there any text about dogs?", "does it say STOP or GO?", 'does it say ""?',
                     "what number is shown?"):
        with pytest.raises(NotSupported, match="needs a VQA model") as refused:
            offline.answer([photos["chelsea"]], [question])
        assert "--vqa-model blip-vqa-base" in explain(refused.value)
    with pytest.raises(NotSupported, match="VQA model"):
        offline.yes_probability([photos["chelsea"]], ["is there a cat?"])
    with pytest.raises(NotSupported, match="needs an ITM model") as refused:
        offline.match([photos["chelsea"]], ["a cat"])
    assert "--itm-model blip-itm-base" in explain(refused.value)


def test_a_suite_routes_each_task_and_names_what_is_missing(tiny):
    suite = ModelSuite(captioner=tiny["caption"], matcher=tiny["match"])
    assert suite.tasks == {"caption", "match"}
    assert len(suite.caption([picture(1)])) == 1 and suite.match([picture(1)], ["x"]).shape == (1,)
    with pytest.raises(NotSupported, match="VQA model"):
        suite.answer([picture(1)], ["is it red?"])
    with pytest.raises(ValueError, match="1 images but 2 questions"):
        tiny["answer"].answer([picture(1)], ["a?", "b?"])


def test_a_preset_loads_from_a_copied_model_dir_without_the_hub(monkeypatch, tmp_path):
    """The air-gapped route: a --model-dir copied from a connected machine (the hub cache layout) is enough."""
    import vlsearch.captioner.registry

    monkeypatch.setattr(vlsearch.captioner.registry, "hub_reachable", lambda timeout=3.0: False)
    snapshot = tmp_path / "models" / "models--Salesforce--blip-vqa-base" / "snapshots" / "0123abc"
    model, processor = tiny_blip("answer")
    model.save_pretrained(snapshot)
    processor.save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abc")
    vqa = load_image_text_model("blip-vqa-base", "answer", model_dir=tmp_path / "models", device="cpu")
    reference = load_image_text_model("tiny-random", "answer", device="cpu")
    assert vqa.name == "blip-vqa-base"
    assert vqa.answer([picture(5)], ["what is it?"]) == reference.answer([picture(5)], ["what is it?"])
