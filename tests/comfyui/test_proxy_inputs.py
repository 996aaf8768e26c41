"""UltraGen Proxy Guidance's proxy input through a real KSampler (issue 25): every proxy item guides its
own video item; a proxy of another batch, an empty one, one off the model's patch grid and one of NaN or huge
values are refused, naming the rule, before anything is sampled."""
import pytest
import torch

from harness import PromptFailed, captured
from test_apply import WAN_T2V, model_file, run
from test_proxy_guidance import guided


def batched(name, proxy_seeds: tuple[int, ...], video_batch: int = 2, cfg: float = 2.0, key: str = "out") -> dict:
    """The guided prompt with a video of ``video_batch`` items and a proxy made of one item per seed."""
    p = guided(name, 1.0, key=key)
    p["latent"]["inputs"]["batch"] = video_batch
    p["sample"]["inputs"]["cfg"] = cfg  # 2: cond and uncond in one model call, the video's items twice
    items = []
    for i, seed in enumerate(proxy_seeds):
        p[f"proxy_{i}"] = {"class_type": "UltraGenTestLatent", "inputs": {
            "seed": seed, "channels": 16, "frames": 2, "height": 16, "width": 16, "batch": 1, "corner_bump": 0.0}}
        items.append([f"proxy_{i}", 0])
    while len(items) > 1:  # ComfyUI's own Latent Batch node joins them
        node = f"join_{len(items)}"
        p[node] = {"class_type": "LatentBatch", "inputs": {"samples1": items[0], "samples2": items[1]}}
        items = [[node, 0]] + items[2:]
    p["proxy"]["inputs"]["proxy"] = items[0]
    del p["proxy_latent"]
    return p


def test_each_video_item_is_guided_by_its_own_proxy_item(comfy):
    name = model_file(comfy, WAN_T2V)
    same = run(comfy, batched(name, (5, 5)))
    own = run(comfy, batched(name, (5, 6)))
    assert same.shape[0] == own.shape[0] == 2
    torch.testing.assert_close(own[0], same[0], rtol=0, atol=1e-6)  # item 0: the same proxy item, same result
    assert float((own[1] - same[1]).abs().max()) > 1e-3, "item 1 follows its own proxy item"


def test_one_proxy_item_guides_every_video_item(comfy):
    name = model_file(comfy, WAN_T2V)
    out = run(comfy, batched(name, (5,)))
    assert out.shape[0] == 2 and torch.isfinite(out).all()


@pytest.mark.parametrize("proxy_items, video_items", [(3, 2), (2, 1)])
def test_a_proxy_of_another_batch_is_refused_naming_the_rule(comfy, proxy_items, video_items):
    name = model_file(comfy, WAN_T2V)
    captured().pop("out", None)
    with pytest.raises(PromptFailed, match=rf"the proxy latent has {proxy_items} items and the video {video_items}\. "
                                           r"A proxy of 1 item guides every item"):
        comfy.run(batched(name, tuple(range(5, 5 + proxy_items)), video_batch=video_items))
    assert "out" not in captured()


@pytest.mark.parametrize("change, words", [
    (dict(frames=0), r"is empty \(shape \(1, 16, 0, 16, 16\)\)"),
    (dict(width=0), r"is empty"),
    (dict(height=5), r"is 2 x 5 x 16 latent cells .*patches of 1 x 2 x 2"),
    (dict(fill="nan"), r"holds 8,192 NaN or infinite value\(s\) of 8,192"),
    (dict(fill="half_nan"), r"holds 4,096 NaN or infinite value\(s\) of 8,192"),
    (dict(fill="inf"), r"holds 8,192 NaN or infinite value\(s\)"),
    (dict(fill="huge"), r"holds values up to .*e\+30, where a Wan latent's stay within a few tens"),
])
def test_a_bad_proxy_is_refused_before_sampling(comfy, change, words):
    name = model_file(comfy, WAN_T2V)
    p = guided(name, 1.0)
    p["proxy_latent"]["inputs"].update(change)
    captured().pop("out", None)
    with pytest.raises(PromptFailed, match=r"UltraGen Proxy Guidance: the proxy latent " + words) as caught:
        comfy.run(p)
    assert "Kernel size" not in str(caught.value) and "out" not in captured()
