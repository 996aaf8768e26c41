from harness import save_wan, captured


def test_sampling_runs(comfy):
    name = save_wan(comfy, "tiny_wan_t2v.safetensors")
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": name, "weight_dtype": "default"}},
        "2": {"class_type": "UltraGenAttentionSettings", "inputs": {"window_t": 0, "window_h": 4, "window_w": 4, "shift": "alternate", "global_branch": True, "global_compression": 2, "fusion": "band", "global_strength": 1.0, "full_attention_blocks": "", "start_percent": 0.0, "end_percent": 1.0}},
        "3": {"class_type": "UltraGenApply", "inputs": {"model": ["1", 0], "settings": ["2", 0]}},
        "4": {"class_type": "UltraGenTestConditioning", "inputs": {"seed": 0, "tokens": 8}},
        "5": {"class_type": "UltraGenTestLatent", "inputs": {"seed": 0, "channels": 16, "frames": 2, "height": 16, "width": 16, "batch": 1, "corner_bump": 0.0}},
        "6": {"class_type": "KSampler", "inputs": {"model": ["3", 0], "seed": 0, "steps": 1, "cfg": 2.0, "sampler_name": "euler", "scheduler": "simple", "positive": ["4", 0], "negative": ["4", 0], "latent_image": ["5", 0], "denoise": 1.0}},
        "7": {"class_type": "UltraGenTestCapture", "inputs": {"samples": ["6", 0], "key": "smoke"}},
    }
    comfy.run(prompt)
    assert captured()["smoke"].shape == (1, 16, 2, 16, 16)
