"""QuatrixLM, QuatrixVision, QuatrixAudio and the log-mel front end."""
import math

import pytest
import torch

import quatrix_world
from quatrix_world import LayerCaches, QCompass, QuatrixAudio, QuatrixConfig, QuatrixLM, QuatrixVision
from quatrix_world.audio import log_mel_spectrogram, mel_center_frequencies, mel_filterbank


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread is fastest and immune to OpenMP spin-waits on a busy machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def small_cfg(**kw):
    base = dict(vocab_size=97, hidden_size=24, num_layers=2, max_seq_len=40, q_rank=12, num_heads=2,
                image_size=32, patch_size=8, vision_layers=1, vision_hidden_size=20,
                n_fft=128, hop_length=64, n_mels=16, audio_patch=3, audio_layers=1, max_audio_tokens=16)
    base.update(kw)
    return QuatrixConfig(**base)


def test_package_exports():
    assert quatrix_world.__version__ == "0.1.0"
    for name in ["QuatrixConfig", "QCompass", "QCompassBi", "KVCache", "LayerCaches", "MHA", "QuatrixBlock",
                 "QuatrixStack", "QuatrixLM", "QuatrixVision", "QuatrixAudio"]:
        assert hasattr(quatrix_world, name)


# ----------------------------------------------------------------------------- LM

def test_quick_start_shapes_small():
    """The original quick-start, at small sizes."""
    cfg = small_cfg(use_vision=True)
    model = QuatrixLM(cfg)
    input_ids = torch.randint(0, cfg.vocab_size, (1, 10))
    out = model(input_ids)
    assert out["logits"].shape == (1, 10, cfg.vocab_size)
    assert out["hidden_states"].shape == (1, 10, cfg.hidden_size)
    out = model(input_ids, pixel_values=torch.randn(1, 3, 32, 32))
    assert out["logits"].shape == (1, 10, cfg.vocab_size)
    assert model.lm_head.weight is model.tok_emb.weight


def test_lm_image_prefix_changes_text_logits():
    torch.manual_seed(0)
    cfg = small_cfg(use_vision=True)
    model = QuatrixLM(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (3, 5))
    a = model(ids)["logits"]
    b = model(ids, pixel_values=torch.randn(3, 3, 32, 32))["logits"]
    assert a.shape == b.shape == (3, 5, cfg.vocab_size)
    assert not torch.allclose(a, b)


def test_lm_audio_prefix():
    cfg = small_cfg(use_audio=True)
    model = QuatrixLM(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 4))
    out = model(ids, audio=torch.randn(2, 640))        # 11 frames -> 4 audio tokens
    assert out["logits"].shape == (2, 4, cfg.vocab_size)
    with pytest.raises(ValueError, match="use_vision"):
        model(ids, pixel_values=torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("mixer,compressed", [("qcompass", False), ("qcompass", True), ("mha", False)])
def test_generate_matches_uncached_greedy(mixer, compressed):
    torch.manual_seed(0)
    cfg = small_cfg(mixer=mixer, compressed=compressed)
    model = QuatrixLM(cfg).eval()
    prompt = torch.randint(0, cfg.vocab_size, (3, 5))
    got = model.generate(prompt, max_new_tokens=8, greedy=True)
    seq = prompt
    for _ in range(8):
        nxt = model(seq)["logits"][:, -1].argmax(-1)
        seq = torch.cat([seq, nxt[:, None]], 1)
    assert torch.equal(got, seq)
    sampled = model.generate(prompt, max_new_tokens=4, temperature=0.7, top_k=5)
    assert sampled.shape == (3, 9) and torch.equal(sampled[:, :5], prompt)


def test_lm_cached_logits_equal_full_forward():
    torch.manual_seed(0)
    cfg = small_cfg(use_vision=True)
    model = QuatrixLM(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, 6))
    px = torch.randn(2, 3, 32, 32)
    full = model(ids, pixel_values=px)["logits"]
    caches = LayerCaches.empty(cfg.num_layers)
    first = model(ids[:, :4], pixel_values=px, caches=caches)["logits"]
    rest = [model(ids[:, t:t + 1], caches=caches)["logits"] for t in range(4, 6)]
    assert torch.allclose(torch.cat([first] + rest, 1), full, atol=1e-5)


def test_lm_key_padding_mask():
    torch.manual_seed(0)
    cfg = small_cfg()
    model = QuatrixLM(cfg).eval()
    ids = torch.randint(1, cfg.vocab_size, (2, 6))
    keep = torch.ones(2, 6, dtype=torch.bool)
    keep[1, 2] = False                                     # row 1 ignores its token 2
    out = model(ids, attn_mask=keep)["logits"]
    ids2 = ids.clone()
    ids2[1, 2] = 0
    out2 = model(ids2, attn_mask=keep)["logits"]
    assert torch.allclose(out[1, 3:], out2[1, 3:], atol=1e-5)
    assert torch.allclose(out[0], model(ids[:1])["logits"][0], atol=1e-5)


def test_lm_errors_name_the_argument():
    cfg = small_cfg()
    model = QuatrixLM(cfg)
    with pytest.raises(ValueError, match="vocab_size"):
        model(torch.tensor([[0, cfg.vocab_size]]))
    with pytest.raises(ValueError, match="vocab_size"):
        model(torch.tensor([[-1, 3]]))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, cfg.max_seq_len + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.zeros(1, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.zeros(1, 3))                           # float ids
    with pytest.raises(ValueError, match="max_seq_len"):
        model.generate(torch.zeros(1, 30, dtype=torch.long), max_new_tokens=20)
    with pytest.raises(ValueError, match="hidden_size"):
        QuatrixLM(small_cfg(hidden_size=25))               # not divisible by num_heads=2
    with pytest.raises(ValueError, match="q_rank"):
        QuatrixLM(small_cfg(q_rank=11))
    with pytest.raises(ValueError, match="mixer"):
        QuatrixLM(small_cfg(mixer="rnn"))


def test_lm_trains_one_step():
    torch.manual_seed(0)
    model = QuatrixLM(small_cfg())
    ids = torch.randint(0, 97, (3, 7))
    logits = model(ids[:, :-1])["logits"]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 97), ids[:, 1:].reshape(-1))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# ----------------------------------------------------------------------------- vision

@pytest.mark.parametrize("size", [56, 64, 224])
def test_vision_sizes(size):
    cfg = QuatrixConfig(hidden_size=16, q_rank=8, num_heads=2, image_size=64, patch_size=8 if size != 224 else 16,
                        vision_layers=1)
    if size == 224:
        cfg = QuatrixConfig(hidden_size=16, q_rank=8, num_heads=2, image_size=224, patch_size=16, vision_layers=1)
    vis = QuatrixVision(cfg, out_dim=12)
    p = cfg.patch_size
    tokens = vis(torch.randn(2, 3, size, size))
    assert tokens.shape == (2, (size // p) ** 2, 12)
    assert vis.pool(torch.randn(2, 3, size, size)).shape == (2, 12)


def test_vision_interpolates_positions_and_rectangles():
    cfg = QuatrixConfig(hidden_size=16, q_rank=8, image_size=32, patch_size=8, vision_layers=1, in_channels=1)
    vis = QuatrixVision(cfg)
    assert vis.pos_embed(4, 4) is vis.pos
    assert vis(torch.randn(3, 1, 16, 40)).shape == (3, 2 * 5, 16)


def test_vision_errors():
    cfg = QuatrixConfig(hidden_size=16, q_rank=8, image_size=32, patch_size=8, vision_layers=1)
    vis = QuatrixVision(cfg)
    with pytest.raises(ValueError, match="smaller than one patch"):
        vis(torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="divisible by patch_size"):
        vis(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match="in_channels"):
        vis(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match="float"):
        vis(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_vision_is_bidirectional():
    torch.manual_seed(0)
    cfg = QuatrixConfig(hidden_size=16, q_rank=8, image_size=16, patch_size=8, vision_layers=1)
    vis = QuatrixVision(cfg).eval()
    assert isinstance(vis.blocks[0].mixer, QCompass) and not vis.blocks[0].mixer.causal
    x = torch.randn(1, 3, 16, 16)
    y = vis(x)
    x[..., 8:, 8:] += 1                                    # change only the last patch
    assert (vis(x)[0, 0] - y[0, 0]).abs().max() > 1e-5     # the first token sees it


# ----------------------------------------------------------------------------- audio

def test_mel_filterbank_shape_and_peaks():
    sr, n_fft, n_mels = 16000, 400, 64
    fb = mel_filterbank(n_fft // 2 + 1, n_mels, sr)
    assert fb.shape == (n_fft // 2 + 1, n_mels)
    assert (fb >= 0).all()
    assert (fb.sum(0) > 0).all()                           # no empty filter at the default sizes
    centres = mel_center_frequencies(n_mels, sr)
    freqs = torch.linspace(0, sr / 2, n_fft // 2 + 1)
    assert torch.all(centres[1:] > centres[:-1])
    peak_freq = freqs[fb.argmax(0)]
    bin_hz = sr / n_fft
    assert (peak_freq - centres).abs().max() < bin_hz      # peaks at a bin bracketing its centre
    fine = mel_filterbank(8001, n_mels, sr)                # 1 Hz bins: peak exactly at the centre
    fine_peak = torch.linspace(0, sr / 2, 8001)[fine.argmax(0)]
    assert (fine_peak - centres).abs().max() <= 0.51
    assert torch.allclose(fine.max(0).values, torch.ones(n_mels), atol=0.02)
    assert math.isclose(float(fb.max()), 1.0, abs_tol=0.2)


def test_pure_tone_peaks_in_nearest_mel_bin():
    sr = 16000
    t = torch.arange(sr) / sr
    for f0 in (440.0, 1000.0, 3000.0):
        wave = torch.sin(2 * math.pi * f0 * t)
        mel = log_mel_spectrogram(wave, sr, n_fft=400, hop_length=160, n_mels=64)
        assert mel.shape == (1, 64, sr // 160 + 1)
        expected = int((mel_center_frequencies(64, sr) - f0).abs().argmin())
        assert int(mel[0].mean(-1).argmax()) == expected, f0
    batch = log_mel_spectrogram(torch.randn(3, 1000), sr, 400, 160, 64)
    assert batch.shape == (3, 64, 1000 // 160 + 1) and torch.isfinite(batch).all()


def test_audio_module_shapes_waveform_and_mel():
    cfg = small_cfg()
    aud = QuatrixAudio(cfg, out_dim=10)
    wave = torch.randn(2, 640)                             # 11 frames -> pad to 12 -> 4 tokens
    tokens = aud(wave)
    assert tokens.shape == (2, 4, 10)
    mel = aud.mel(wave)
    assert mel.shape == (2, 16, 11)
    assert torch.allclose(aud(mel, is_mel=True), tokens, atol=1e-5)
    assert aud.pool(wave).shape == (2, 10)
    assert aud(torch.randn(640)).shape == (1, 4, 10)
    with pytest.raises(ValueError, match="max_audio_tokens"):
        aud(torch.randn(1, 64 * 60))
    with pytest.raises(ValueError, match="n_mels"):
        aud(torch.randn(2, 5, 11), is_mel=True)
