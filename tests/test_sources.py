"""Dataset converters (plural.data.sources) on small fixtures in each publisher's layout (tests/fixtures/<source>/)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plural.cli import main
from plural.data import read_table
from plural.data.sources import convert
from plural.errors import PluralError

FIX = Path(__file__).parent / "fixtures"


def pairs(result):
    return [tuple(r) for r in result.table[["user_id", "prompt", "chosen", "rejected"]].itertuples(index=False)]


def edit_jsonl(src, dst, row, fn):
    """Copy a JSON Lines file, applying fn to the record of one row."""
    recs = [json.loads(line) for line in src.read_text().splitlines()]
    fn(recs[row])
    dst.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return dst


# ---------------------------------------------------------------- PRISM

COOK, VEG = "What should I cook tonight?", "Something vegetarian?"
VOTE, CAREER = "Should the voting age be 16?", "How do I respect my parents while choosing my own career?"
PRISM_PAIRS = [
    ("user0", COOK, "Try a mushroom risotto.", "Cook whatever you like."),
    ("user0", COOK, "Try a mushroom risotto.", "food"),  # risotto vs stir-fry: tie (80 = 80)
    ("user0", COOK, "A quick stir-fry with rice.", "Cook whatever you like."),
    ("user0", COOK, "Cook whatever you like.", "food"),
    ("user0", COOK, "A quick stir-fry with rice.", "food"),
    ("user0", VEG, "A chickpea curry is filling and vegetarian.", "Vegetables."),
    ("user1", VOTE, "Many countries use 18; some, like Austria, allow 16.", "There are arguments on both sides."),
    ("user1", VOTE, "There are arguments on both sides.", "I cannot answer that."),
    ("user1", VOTE, "Many countries use 18; some, like Austria, allow 16.", "Yes, absolutely."),
    ("user1", VOTE, "Yes, absolutely.", "I cannot answer that."),
    ("user1", VOTE, "Many countries use 18; some, like Austria, allow 16.", "I cannot answer that."),
    # user1's second turn is a 60 / 60 tie
    ("user2", CAREER, "Explain your reasons, listen to theirs, and look for a plan you can both accept.",
     "Talk openly with them about your goals."),
    ("user2", CAREER, "Career choices are personal.", "Talk openly with them about your goals."),
    ("user2", CAREER, "Explain your reasons, listen to theirs, and look for a plan you can both accept.",
     "Career choices are personal."),
]


def test_prism_pairs_users_and_demographics():
    r = convert("prism", FIX / "prism")
    assert pairs(r) == PRISM_PAIRS
    assert r.stats["ties"] == 3
    t = r.table
    assert t.groupby("user_id")["group"].first().to_dict() == {"user0": "Europe", "user1": "Americas", "user2": "Asia"}
    u1 = t[t.user_id == "user1"].iloc[0]
    assert (u1.birth_country, u1.reside_country, u1.reside_region, u1.age, u1.religion, u1.ethnicity) == \
        ("Mexico", "United States", "Americas", "45-54 years old", "Christian", "Hispanic / Latino")
    assert t.turn.tolist() == [0] * 5 + [1] + [0] * 8
    assert (t.chosen_score > t.rejected_score).all()
    assert t.loc[0, ["chosen_model", "rejected_model", "conversation_id"]].tolist() == ["gpt-4", "command", "c0"]


def test_prism_utterances_give_the_same_pairs_and_options():
    assert pairs(convert("prism", FIX / "prism" / "utterances.jsonl")) == PRISM_PAIRS
    r = convert("prism", FIX / "prism" / "conversations.jsonl", group="reside_country", turns="first")
    assert len(r.table) == 13 and set(r.table.turn) == {0}
    assert r.table.groupby("user_id")["group"].first()["user1"] == "United States"
    gap = convert("prism", FIX / "prism", min_score_gap=30)  # drops score gaps of 15 and 30 (four times)
    assert len(gap.table) == 9 and gap.stats == {"ties": 3, "small_gap": 5, "identical": 0}
    with pytest.raises(PluralError, match="--group shoe_size"):
        convert("prism", FIX / "prism", group="shoe_size")


def _prism_copy(tmp_path):
    d = tmp_path / "prism"
    shutil.copytree(FIX / "prism", d)
    return d


@pytest.mark.parametrize("row,edit,expect", [
    (0, lambda r: r["conversation_history"][2].pop("score"),
     r"conversations.jsonl: column 'conversation_history\[2\].score', row 0 \(line 1\): missing field"),
    (1, lambda r: r["conversation_history"][3].update(score="high"),
     r"conversations.jsonl: column 'conversation_history\[3\].score', row 1 \(line 2\): wrong type: expected a number, got str"),
    (2, lambda r: r.update(user_id="user99"),
     r"conversations.jsonl: column 'user_id', row 2 \(line 3\): participant 'user99' is not in survey.jsonl"),
    (0, lambda r: r.update(conversation_history="none"),
     r"column 'conversation_history', row 0 \(line 1\): wrong type: expected a list"),
])
def test_prism_refuses_malformed_rows(tmp_path, row, edit, expect):
    d = _prism_copy(tmp_path)
    edit_jsonl(FIX / "prism" / "conversations.jsonl", d / "conversations.jsonl", row, edit)
    with pytest.raises(PluralError, match=expect):
        convert("prism", d)


def test_prism_refuses_unreadable_json_and_missing_survey(tmp_path):
    d = _prism_copy(tmp_path)
    with open(d / "conversations.jsonl", "a") as fh:
        fh.write('{"conversation_id": "c3", "user_id": \n')
    with pytest.raises(PluralError, match=r"conversations.jsonl: row 3 \(line 4\): not valid JSON"):
        convert("prism", d)
    (d / "survey.jsonl").unlink()
    with pytest.raises(PluralError, match="survey.jsonl: no such file"):
        convert("prism", d / "utterances.jsonl")


# ---------------------------------------------------------------- Community Alignment

CA = FIX / "community_alignment" / "filtered_community_alignment.csv"
BUDGET, INCOME = "How should I plan a budget, as a student?", "What if my income varies?"
RULE = "Use the 50/30/20 rule:\n50% needs, 30% wants, 20% savings."
SHOES, HOBBY, HOST = "Is it rude to keep shoes on indoors?", "Suggest a weekend hobby.", "It depends on the household; ask the host."
CA_PAIRS = [
    ("ann-7", BUDGET, RULE, "Track every expense for a month, then set limits."),
    ("ann-7", BUDGET, RULE, "Ask your parents for money."),
    ("ann-7", BUDGET, RULE, "Budgets are hard, honestly."),
    ("ann-7", INCOME, "Use an app.", "Budget on your lowest month."),
    ("ann-7", INCOME, "Use an app.", "Keep a buffer fund."),
    ("ann-7", INCOME, "Use an app.", "Don't worry."),
    ("ann-9", SHOES, HOST, "Yes, always."),  # response_c repeats response_a verbatim: skipped
    ("ann-9", SHOES, HOST, "No."),  # the second turn has no preference: skipped
    ("ann-7", HOBBY, "Cooking a new recipe each week.", "Gardening."),
    ("ann-7", HOBBY, "Cooking a new recipe each week.", "Chess, online or at a club."),
    ("ann-7", HOBBY, "Cooking a new recipe each week.", "Sleep."),
]


def test_community_alignment_three_pairs_per_turn_and_annotator_columns():
    r = convert("community-alignment", CA)
    assert pairs(r) == CA_PAIRS
    assert r.stats == {"unlabelled_turns": 1, "identical": 1}
    t = r.table
    assert t.group.tolist() == ["india"] * 6 + ["united states"] * 2 + ["india"] * 3
    assert t.turn.tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0]
    assert t.loc[6, ["annotator_age", "annotator_political", "annotator_ethnicity", "assigned_lang"]].tolist() == \
        ["55+", "conservative", "white", "en"]
    assert pd.isna(t.loc[0, "annotator_ethnicity"])  # an empty cell stays missing
    assert t.loc[0, ["chosen_label", "rejected_label", "feedback"]].tolist() == ["response_b", "response_a", "Concrete and easy to follow."]
    assert t.is_pregenerated_first_prompt.tolist() == [True] * 6 + [False] * 2 + [True] * 3
    assert convert("community-alignment", CA, group="annotator_age").table.group.tolist()[6] == "55+"


def test_community_alignment_reads_the_same_columns_as_parquet(tmp_path):
    p = tmp_path / "ca.parquet"
    pd.read_csv(CA, keep_default_na=False, dtype=str).replace("", None).to_parquet(p)
    assert pairs(convert("community-alignment", p)) == CA_PAIRS


def _ca_edit(tmp_path, row, **values):
    df = pd.read_csv(CA, keep_default_na=False, dtype=str)
    for k, v in values.items():
        df.loc[row, k] = v
    out = tmp_path / "ca.csv"
    df.to_csv(out, index=False)
    return out


@pytest.mark.parametrize("row,values,expect", [
    # row 0 holds a response with a line break, so row 1 starts on line 4
    (1, {"first_turn_preferred_response": "response_e"},
     r"ca.csv: column 'first_turn_preferred_response', row 1 \(line 4\): preferred response 'response_e' is out of range"),
    (2, {"annotator_id": ""}, r"ca.csv: column 'annotator_id', row 2 \(line 5\): missing field"),
    (2, {"first_turn_response_c": ""}, r"column 'first_turn_response_c', row 2 \(line 5\): the preferred response_c has no text"),
    (2, {"annotator_country": "italy"},
     r"column 'annotator_country', row 2 \(line 5\): user 'ann-7' has annotator_country 'italy' here but 'india' earlier"),
])
def test_community_alignment_refuses_malformed_rows(tmp_path, row, values, expect):
    with pytest.raises(PluralError, match=expect):
        convert("community-alignment", _ca_edit(tmp_path, row, **values))


def test_community_alignment_refuses_wrong_types_in_json(tmp_path):
    recs = pd.read_csv(CA, keep_default_na=False, dtype=str).to_dict(orient="records")
    recs[1]["first_turn_response_b"] = 7
    p = tmp_path / "ca.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    with pytest.raises(PluralError, match=r"column 'first_turn_response_b', row 1 \(line 2\): wrong type: expected a string, got int"):
        convert("community-alignment", p)


# ---------------------------------------------------------------- summarize from feedback

SUM = FIX / "summarize_feedback" / "batch3.json"


def test_summarize_feedback_pairs_and_worker_ids():
    r = convert("summarize-feedback", SUM.parent)  # a folder of batch files
    t = r.table
    assert t.user_id.tolist() == ["w_ab12", "w_cd34", "w_ab12", "w_ef56"]
    assert t.chosen.tolist() == [" Friend cancels plans repeatedly; should I confront her?",
                                 " 6k car loan at 4% and 10k savings: pay it off early or keep the cash?",
                                 " Storm closes schools and cuts power on the coast.",
                                 " My rice is sticky every time, what am I doing wrong?"]
    assert t.rejected.tolist() == [" friend bad", " Car loan payoff?", " It rained.", " Rice keeps turning out sticky; why?"]
    assert t.prompt[0] == ("SUBREDDIT: r/relationships\nTITLE: My friend keeps cancelling plans\nPOST: We made plans four "
                           "times and she cancelled each time at the last minute. Should I say something?")
    assert t.prompt[2].startswith("A storm hit the coast")
    assert t.loc[1, ["chosen_policy", "rejected_policy", "confidence", "split", "post_id"]].tolist() == ["ref", "sup4", 6, "train", "t3_b2"]
    assert "group" not in t.columns
    # workers have no demographics; a per-comparison column as group contradicts itself within a worker
    with pytest.raises(PluralError, match=r"batch3.json: column 'split', row 2 \(line 3\): user 'w_ab12' has split 'valid1'"):
        convert("summarize-feedback", SUM, group="split")


@pytest.mark.parametrize("row,edit,expect", [
    (1, lambda r: r.update(choice=2), r"column 'choice', row 1 \(line 2\): preferred index 2 is out of range"),
    (2, lambda r: r.pop("worker"), r"column 'worker', row 2 \(line 3\): missing field"),
    (0, lambda r: r["summaries"][1].update(text=3), r"column 'summaries\[1\].text', row 0 \(line 1\): wrong type"),
    (3, lambda r: r.update(choice="1"), r"column 'choice', row 3 \(line 4\): wrong type: expected an integer"),
    (3, lambda r: r["info"].update(post=None), r"column 'info.post', row 3 \(line 4\): missing field"),
])
def test_summarize_feedback_refuses_malformed_rows(tmp_path, row, edit, expect):
    p = edit_jsonl(SUM, tmp_path / "batch3.json", row, edit)
    with pytest.raises(PluralError, match=expect):
        convert("summarize-feedback", p)
    p.write_text(SUM.read_text() + "{not json}\n")
    with pytest.raises(PluralError, match=r"batch3.json: row 4 \(line 5\): not valid JSON"):
        convert("summarize-feedback", p)


# ---------------------------------------------------------------- Stanford Human Preferences (SHP)

SHP = FIX / "shp"  # the card's layout: one folder per subreddit of JSON Lines splits
RICE = "Rinse it until the water runs clear, then rest it covered for ten minutes."


def test_shp_one_collective_user_per_subreddit_with_the_cards_filters():
    r = convert("shp", SHP)
    t = r.table
    assert t.user_id.tolist() == ["askculinary"] * 4 + ["legaladvice"] * 2 and t.group.equals(t.user_id)
    assert t.chosen.tolist()[:3] == [RICE, RICE, "Toast the grains in oil first; it keeps them separate."]
    assert t.rejected.tolist()[:3] == ["Just buy a rice cooker.", "Use less water.", "Use less water."]  # labels 1, 0, 1
    assert t.prompt[0] == "What's the best way to keep rice from getting sticky?"
    assert t.loc[1, ["post_id", "split", "chosen_score", "rejected_score"]].tolist() == ["qt3nxl", "train", 52, 9]
    assert t.split.tolist()[-1] == "test"
    assert r.stats == {"below_min_score_ratio": 1, "over_max_pairs_per_post": 0, "identical": 1}
    # at most 2 pairs of a post: the largest score ratios; the ratio-1.5 pair passes min_score_ratio=1
    r = convert("shp", SHP, overrides=["max_pairs_per_post=2", "min_score_ratio=1"])
    assert r.table.score_ratio.round(2).tolist() == [6.5, 5.78, 10.0, 8.0, 5.82]
    assert r.stats["over_max_pairs_per_post"] == 2 and r.stats["below_min_score_ratio"] == 0
    assert len(convert("shp", SHP / "legaladvice" / "test.json").table) == 2  # one file


@pytest.mark.parametrize("row,edit,expect", [
    (1, lambda r: r.update(labels=2), r"column 'labels', row 1 \(line 2\): preference label 2 is not 0 or 1"),
    (2, lambda r: r.pop("human_ref_B"), r"column 'human_ref_B', row 2 \(line 3\): missing field"),
    (0, lambda r: r.update(score_ratio="high"), r"column 'score_ratio', row 0 \(line 1\): wrong type: expected a number"),
    (3, lambda r: r.update(domain=None), r"column 'domain', row 3 \(line 4\): missing field"),
    (4, lambda r: r.update(score_ratio=-2.0), r"column 'score_ratio', row 4 \(line 5\): score ratio -2.0 is not positive"),
])
def test_shp_refuses_malformed_rows(tmp_path, row, edit, expect):
    p = edit_jsonl(SHP / "askculinary" / "train.json", tmp_path / "train.json", row, edit)
    with pytest.raises(PluralError, match=expect):
        convert("shp", p)
    with pytest.raises(PluralError, match="max_pairs_per_post=-1"):
        convert("shp", SHP, overrides=["max_pairs_per_post=-1"])


# ---------------------------------------------------------------- attribute scores

HS = FIX / "attribute_scores" / "helpsteer2.jsonl"
SHORT = "Plants turn light, water and CO2 into sugar and oxygen."


def test_attribute_scores_one_user_per_attribute():
    r = convert("attribute-scores", HS)
    t = r.table
    assert r.stats == {"identical": 0, "agreeing_pairs": 0, "ties_helpfulness": 0, "ties_correctness": 2,
                       "ties_coherence": 2, "ties_complexity": 1, "ties_verbosity": 1}
    assert len(t) == 14 and (t.user_id == t.group + "-0").all()
    assert t.group.tolist() == ["helpfulness", "complexity", "verbosity",  # photosynthesis pair
                                "helpfulness", "correctness", "coherence", "verbosity",  # Miso vs Cat
                                "helpfulness", "complexity",  # Miso vs Pixel
                                "helpfulness", "correctness", "coherence", "complexity", "verbosity"]  # Cat vs Pixel
    assert t.chosen[0] == SHORT and t.rejected[1] == SHORT
    for a in ("helpfulness", "correctness", "coherence", "complexity", "verbosity"):
        rows = t[t.group == a]
        assert (rows[f"chosen_attr_{a}"] > rows[f"rejected_attr_{a}"]).all()  # each user prefers its attribute
    assert t.loc[8, ["chosen", "rejected", "chosen_attr_complexity", "rejected_attr_complexity"]].tolist() == \
        ["How about Pixel, Miso or Juniper?", "Miso.", 2.0, 1.0]


def test_attribute_scores_options_and_errors(tmp_path):
    t = convert("attribute-scores", HS, users_per_attribute=2).table
    assert t[t.group == "helpfulness"].user_id.tolist() == ["helpfulness-0", "helpfulness-1", "helpfulness-0", "helpfulness-1"]
    r = convert("attribute-scores", HS, overrides=["disagreement_only=true", "attributes=helpfulness,verbosity,complexity"])
    assert r.stats["agreeing_pairs"] == 2 and len(r.table) == 5
    assert sorted(c for c in r.table.columns if c.startswith("chosen_attr_")) == \
        ["chosen_attr_complexity", "chosen_attr_helpfulness", "chosen_attr_verbosity"]
    csv = tmp_path / "hs.csv"
    pd.read_json(HS, lines=True).to_csv(csv, index=False)
    assert pairs(convert("attribute-scores", csv)) == pairs(convert("attribute-scores", HS))
    p = edit_jsonl(HS, tmp_path / "hs.jsonl", 3, lambda r: r.update(verbosity="long"))
    with pytest.raises(PluralError, match=r"hs.jsonl: column 'verbosity', row 3 \(line 4\): wrong type: expected a number"):
        convert("attribute-scores", p)
    p = edit_jsonl(HS, tmp_path / "hs.jsonl", 4, lambda r: r.pop("coherence"))
    with pytest.raises(PluralError, match=r"column 'coherence', row 4 \(line 5\): missing field"):
        convert("attribute-scores", p)
    with pytest.raises(PluralError, match="--group: the attribute-scores source has no group choice"):
        convert("attribute-scores", HS, group="helpfulness")


# ---------------------------------------------------------------- output, contract, CLI

def test_outputs_follow_the_preference_table_contract(tmp_path):
    """With embeddings added, every converter's output passes the table validation of plural fit."""
    rng = np.random.default_rng(0)
    for source, path in (("prism", FIX / "prism"), ("community-alignment", CA), ("summarize-feedback", SUM),
                         ("attribute-scores", HS), ("shp", SHP)):
        t = convert(source, path, tmp_path / f"{source}.jsonl").table
        back = pd.read_json(tmp_path / f"{source}.jsonl", lines=True, dtype=False)
        assert back[["user_id", "prompt", "chosen", "rejected"]].equals(t[["user_id", "prompt", "chosen", "rejected"]])
        for c in ("chosen", "rejected"):
            t[f"{c}_embedding"] = list(rng.normal(size=(len(t), 4)).astype(np.float32))
        t.to_parquet(tmp_path / f"{source}.parquet")
        data = read_table(tmp_path / f"{source}.parquet")
        assert len(data.users) == t.user_id.nunique() and len(data.groups) == (t.group.nunique() if "group" in t else 0)


def test_cli_convert(tmp_path, capsys):
    out = tmp_path / "ca.parquet"
    assert main(["convert", "community-alignment", str(CA), str(out), "--group", "annotator_gender"]) == 0
    assert "11 comparisons, 2 users, 2 groups" in capsys.readouterr().out
    assert pd.read_parquet(out).group.tolist()[:7] == ["female"] * 6 + ["male"]
    assert main(["convert", "prism", str(FIX / "prism"), str(tmp_path / "p.jsonl"), "--set", "turns=first"]) == 0
    assert sum(1 for _ in open(tmp_path / "p.jsonl")) == 13
    assert main(["convert", "nosuch", str(CA), str(tmp_path / "x.parquet")]) == 2
    assert main(["convert", "prism", str(FIX / "prism"), str(tmp_path / "x.csv")]) == 2
    assert main(["convert", "prism", str(FIX / "prism"), str(tmp_path / "x.jsonl"), "--set", "turns=last"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("plural: error: ") for e in err)
    assert "unknown source 'nosuch'" in err[0] and "unknown output type '.csv'" in err[1] and "turns=last" in err[2]
