"""Q-Compass / MHA mixers: parameter counts, fast path == reference, KV cache == full recompute."""
import pytest
import torch

from quatrix_world import qcompass
from quatrix_world.blocks import QuatrixBlock, QuatrixStack
from quatrix_world.qcompass import (MHA, KVCache, LayerCaches, QCompass, QCompassBi,
                                    cache_bytes_per_token)

B, T, H, R = 3, 7, 24, 12       # distinct sizes so broadcasting bugs show
ATOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: one thread is fastest and immune to OpenMP spin-waits on a busy machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def nparams(m):
    return sum(p.numel() for p in m.parameters())


def make(kind, heads=1, causal=True, H=H, R=R, **kw):
    torch.manual_seed(0)
    if kind == "mha":
        return MHA(H, num_heads=heads, causal=causal, **kw).eval()
    return QCompass(H, R, num_heads=heads, causal=causal, compressed=(kind == "compressed"), **kw).eval()


def episode_mask(batch, length, starts):
    """Block-diagonal [B,1,T,T] mask: row b has new episodes at the given start indices."""
    ep = torch.zeros(batch, length, dtype=torch.long)
    for b, ss in enumerate(starts):
        for s in ss:
            ep[b, s:] += 1
    return (ep[:, :, None] == ep[:, None, :]).unsqueeze(1)


KINDS = ["plain", "compressed", "mha"]


@pytest.fixture(autouse=True, params=["auto", "sdpa"])
def attention_path(request, monkeypatch):
    """Run every test twice: the default dispatch (plain matmuls for these short sequences) and
    forced SDPA (what long sequences use), so the fast SDPA path is checked at small sizes too."""
    if request.param == "sdpa":                   # modules built in the test copy these
        monkeypatch.setattr(qcompass, "MATMUL_MAX_QUERIES", 0)
        monkeypatch.setattr(qcompass, "MATMUL_MAX_AREA", 0)
    return request.param


@pytest.mark.parametrize("kind", KINDS)
def test_long_sequence_fast_path_equals_reference(kind):
    """T*T above the matmul threshold: the default dispatch takes SDPA."""
    m = make(kind, 2, H=16, R=8)
    x = torch.randn(2, 131, 16)
    mask = episode_mask(2, 131, [[40], [7, 100]])
    assert torch.allclose(m(x, attn_mask=mask), m(x, attn_mask=mask, reference=True), atol=ATOL)
    assert torch.allclose(m(x), m(x, reference=True), atol=ATOL)


# ----------------------------------------------------------------------------- params / errors

def test_param_counts_match_quatrix_readme():
    assert nparams(QCompass(hidden_size=512, q_rank=64)) == 327_680
    assert nparams(MHA(512)) == 1_048_576
    assert nparams(QCompass(512, 64, num_heads=8)) == 327_680
    # compressed: W_s, W_a (H x r), W_c (r x r), W_o (r x H)
    assert nparams(QCompass(512, 64, compressed=True)) == 3 * 512 * 64 + 64 * 64


def test_cache_bytes_per_token():
    assert cache_bytes_per_token(512, 64, "qcompass", False) == (64 + 512) * 4
    assert cache_bytes_per_token(512, 64, "qcompass", True) == 2 * 64 * 4
    assert cache_bytes_per_token(512, 64, "mha", False) == 2 * 512 * 4
    with pytest.raises(ValueError, match="mixer"):
        cache_bytes_per_token(512, 64, "rnn", False)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="hidden_size"):
        QCompass(25, 12, num_heads=2)
    with pytest.raises(ValueError, match="q_rank"):
        QCompass(24, 10, num_heads=4)
    m = QCompass(H, R, max_seq_len=8)
    with pytest.raises(ValueError, match="hidden_size"):
        m(torch.randn(B, T, H + 1))
    with pytest.raises(ValueError, match="3-D"):
        m(torch.randn(T, H))
    with pytest.raises(ValueError, match="max_seq_len"):
        m(torch.randn(B, 9, H))
    cache = KVCache()
    m(torch.randn(B, 5, H), cache=cache)
    with pytest.raises(ValueError, match="max_seq_len"):
        m(torch.randn(B, 4, H), cache=cache)
    with pytest.raises(ValueError, match="attn_mask"):
        m(torch.randn(B, 3, H), attn_mask=torch.ones(B, 1, 3, 3))      # not bool


# ----------------------------------------------------------------------------- fast == reference

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("heads", [1, 2, 4])
@pytest.mark.parametrize("causal", [True, False])
def test_fast_path_equals_reference(kind, heads, causal):
    m = make(kind, heads, causal)
    x = torch.randn(B, T, H)
    assert torch.allclose(m(x), m(x, reference=True), atol=ATOL)
    mask = episode_mask(B, T, [[], [3], [2, 5]])
    assert torch.allclose(m(x, attn_mask=mask), m(x, attn_mask=mask, reference=True), atol=ATOL)
    keys = torch.rand(B, 1, 1, T) > 0.3
    keys[..., 0] = True
    assert torch.allclose(m(x, attn_mask=keys), m(x, attn_mask=keys, reference=True), atol=ATOL)


def test_bi_is_qcompass_without_causal_mask():
    torch.manual_seed(0)
    bi = QCompassBi(H, R, num_heads=2)
    assert not bi.causal
    x = torch.randn(B, T, H)
    y = bi(x)
    # the last token changes every output of a bidirectional mixer
    x2 = x.clone()
    x2[:, -1] += 1
    assert (bi(x2)[:, 0] - y[:, 0]).abs().max() > 1e-4
    # ... but none of a causal one's earlier outputs
    c = make("plain", 2)
    assert torch.allclose(c(x)[:, :-1], c(x2)[:, :-1], atol=ATOL)


@pytest.mark.parametrize("kind", KINDS)
def test_fast_path_gradients_equal_reference(kind):
    m = make(kind, 2)
    x = torch.randn(B, T, H, requires_grad=True)
    mask = episode_mask(B, T, [[], [3], [2, 5]])
    g_fast = torch.autograd.grad(m(x, attn_mask=mask).square().sum(), [x, *m.parameters()])
    g_ref = torch.autograd.grad(m(x, attn_mask=mask, reference=True).square().sum(), [x, *m.parameters()])
    for a, b in zip(g_fast, g_ref):
        assert torch.allclose(a, b, atol=1e-4)


def test_rows_with_no_visible_key_are_zero_not_nan():
    m = make("plain", 2, causal=False)
    x = torch.randn(B, T, H, requires_grad=True)
    mask = torch.ones(B, 1, T, T, dtype=torch.bool)
    mask[1, :, 2] = False                                  # query 2 of row 1 sees nothing
    for ref in (False, True):
        y = m(x, attn_mask=mask, reference=ref)
        assert torch.isfinite(y).all()
        assert torch.allclose(y[1, 2], m.W_o.weight.new_zeros(H), atol=ATOL)
        (g,) = torch.autograd.grad(y.sum(), [x])
        assert torch.isfinite(g).all()


# ----------------------------------------------------------------------------- KV cache

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("heads", [1, 4])
def test_step_decoding_equals_full_forward(kind, heads):
    m = make(kind, heads)
    x = torch.randn(B, T, H)
    full = m(x)
    cache = KVCache()
    steps = [m(x[:, t:t + 1], cache=cache) for t in range(T)]
    assert len(cache) == T
    assert torch.allclose(torch.cat(steps, 1), full, atol=ATOL)
    # chunked prefill then steps, reference path too
    cache = KVCache()
    first = m(x[:, :4], cache=cache, reference=True)
    rest = m(x[:, 4:], cache=cache)
    assert torch.allclose(torch.cat([first, rest], 1), full, atol=ATOL)


@pytest.mark.parametrize("kind", KINDS)
def test_cache_contents_and_bytes(kind):
    m = make(kind, 2)
    cache = KVCache()
    m(torch.randn(B, T, H), cache=cache)
    per_tok = cache_bytes_per_token(H, R, "mha" if kind == "mha" else "qcompass", kind == "compressed")
    assert cache.nbytes() == B * T * per_tok
    assert cache.action.shape[:3] == (B, 2, T)


@pytest.mark.parametrize("kind", KINDS)
def test_decoding_with_key_mask_equals_full_forward(kind):
    """Decode with an episode mask over keys (as the world model's imagination does)."""
    m = make(kind, 2)
    x = torch.randn(B, T, H)
    mask = episode_mask(B, T, [[], [3], [2, 5]])           # [B,1,T,T]
    full = m(x, attn_mask=mask)
    cache = KVCache()
    outs = [m(x[:, t:t + 1], attn_mask=mask[:, :, t:t + 1, :t + 1], cache=cache) for t in range(T)]
    assert torch.allclose(torch.cat(outs, 1), full, atol=ATOL)


@pytest.mark.parametrize("kind", KINDS)
def test_repeat_interleave_branches_continue_identically(kind):
    m = make(kind, 2)
    g = 3
    x = torch.randn(B, T, H)
    cache = KVCache()
    m(x[:, :4], cache=cache)
    branched = cache.repeat_interleave(g)
    assert len(branched) == 4 and branched.action.shape[0] == B * g
    nxt = x[:, 4:]
    orig = m(nxt, cache=cache)
    rep = m(nxt.repeat_interleave(g, 0), cache=branched)
    for b in range(B):
        for j in range(g):
            assert torch.allclose(rep[b * g + j], orig[b], atol=ATOL)
    # index_select picks rows back out
    picked = branched.index_select(torch.tensor([0, g, 2 * g]))
    assert torch.allclose(picked.action, cache.action, atol=ATOL)   # both were extended by the same 3 tokens
    assert torch.allclose(picked.content, cache.content, atol=ATOL)


def test_window_keeps_last_tokens():
    m = make("plain", 2)
    cache = KVCache(window=4)
    x = torch.randn(B, T, H)
    for t in range(T):
        m(x[:, t:t + 1], cache=cache)
        assert len(cache) == min(t + 1, 4)
    full = KVCache()
    m(x, cache=full)
    assert torch.allclose(cache.action, full.action[:, :, -4:], atol=ATOL)
    assert torch.allclose(cache.content, full.content[:, :, -4:], atol=ATOL)
    # windowed step == attending over the last W cached tokens + itself
    y = m(x[:, :1], cache=cache.clone())
    keys = torch.cat([x[:, T - 4:], x[:, :1]], 1)
    assert torch.allclose(y, m(keys)[:, -1:], atol=ATOL)


def test_layer_caches_helpers():
    lc = LayerCaches.empty(3, window=5)
    assert len(lc) == 3 and all(isinstance(c, KVCache) and c.window == 5 and len(c) == 0 for c in lc)
    stack = QuatrixStack(3, H, R, num_heads=2)
    stack(torch.randn(B, T, H), caches=lc)
    assert lc.seq_len() == 5 and lc.nbytes() > 0
    rep = lc.repeat_interleave(2)
    assert isinstance(rep, LayerCaches) and rep[0].action.shape[0] == 2 * B
    cl = lc.clone()
    cl[0].action.add_(1)
    assert not torch.equal(cl[0].action, lc[0].action)
    sel = lc.index_select(torch.tensor([2, 0]))
    assert torch.equal(sel[1].content, lc[1].content[[2, 0]])


@pytest.mark.parametrize("mixer,compressed", [("qcompass", False), ("qcompass", True), ("mha", False)])
def test_stack_step_decoding_equals_full_forward(mixer, compressed):
    torch.manual_seed(1)
    stack = QuatrixStack(2, H, R, num_heads=2, mixer=mixer, compressed=compressed).eval()
    x = torch.randn(B, T, H)
    mask = episode_mask(B, T, [[], [3], [2, 5]])
    full = stack(x, attn_mask=mask)
    assert torch.allclose(full, stack(x, attn_mask=mask, reference=True), atol=ATOL)
    caches = LayerCaches.empty(2)
    pre = stack(x[:, :3], attn_mask=mask[:, :, :3, :3], caches=caches)
    outs = [pre] + [stack(x[:, t:t + 1], attn_mask=mask[:, :, t:t + 1, :t + 1], caches=caches)
                    for t in range(3, T)]
    assert torch.allclose(torch.cat(outs, 1), full, atol=ATOL)
    # branch after the prefix: every copy continues like the original
    caches = LayerCaches()
    stack(x[:, :3], caches=caches)
    rep = caches.repeat_interleave(2)
    a = stack(x[:, 3:4], caches=caches)
    b = stack(x[:, 3:4].repeat_interleave(2, 0), caches=rep)
    assert torch.allclose(b[0::2], a, atol=ATOL) and torch.allclose(b[1::2], a, atol=ATOL)


def test_block_structure_and_mixer_switch():
    blk = QuatrixBlock(H, R, num_heads=2, mixer="mha")
    assert isinstance(blk.mixer, MHA)
    assert isinstance(QuatrixBlock(H, R).mixer, QCompass)
    with pytest.raises(ValueError, match="mixer"):
        QuatrixBlock(H, R, mixer="lstm")
    x = torch.randn(B, T, H)
    assert blk(x).shape == (B, T, H)


def test_dropout_only_in_training():
    m = QCompass(H, R, num_heads=2, dropout=0.5)
    x = torch.randn(B, T, H)
    m.eval()
    assert torch.equal(m(x), m(x))
    m.train()
    torch.manual_seed(0)
    a = m(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, m(x))


def test_kv_cache_appends_in_place_and_matches_concatenation():
    """Decoding writes into spare capacity (no copy of the whole cache per step); the cached
    tensors equal plain concatenation, and a clone taken earlier is not changed by later steps."""
    torch.manual_seed(0)
    B, h, d = 3, 2, 5
    cache, ref, snapshot = KVCache(), None, None
    with torch.no_grad():
        for step in range(40):
            a, c = torch.randn(B, h, 1, d), torch.randn(B, h, 1, d + 1)
            full_a, full_c = cache.extend(a, c)
            ref = (a, c) if ref is None else (torch.cat([ref[0], a], 2), torch.cat([ref[1], c], 2))
            assert torch.equal(full_a, ref[0]) and torch.equal(full_c, ref[1])
            if step == 10:
                snapshot = cache.clone()
                ptr = cache._buf[0].data_ptr()
            if step == 11:
                assert cache._buf[0].data_ptr() == ptr          # appended into the same buffer
    assert len(cache) == 40 and len(snapshot) == 11
    assert torch.equal(snapshot.action, ref[0][:, :, :11])
