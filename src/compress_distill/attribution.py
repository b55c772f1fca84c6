"""Who to cite and whose terms apply: the paper, the upstream benchmarks, and each model family's outputs.

One place for the facts the dataset card (card.py) states about rights and credit:

- ``PAPER_BIBTEX``: the Compress-Distill paper (title and authors as in the paper's own header).
- ``BENCHMARKS``: per dataset id of ``config.DATASET_IDS`` (the Hub id comes from ``benchmarks.registry``), the
  licence its Hub card declares and the BibTeX of its paper, as the paper's reference list gives it.  A licence
  this project could not confirm on the Hub card is ``None`` and the card says "see the dataset card".
- ``MODEL_LICENSES``: the licence that governs a model family's weights *and outputs*, matched by a lower-case
  substring of the model id, first match wins (so ``llama-3.3`` is tried before a broader rule would be).  A
  teacher's reasoning and a compressor's rewrite are that model's outputs: a dataset that contains them carries
  those terms (e.g. the Llama 3.3 licence asks that a model trained on Llama outputs and distributed names
  itself "Llama ..."), whatever ``build.license`` says about the project's own curation.  A model no rule
  matches gets ``UNKNOWN_LICENSE``.  Add a family here, with its licence's URL, when a profile uses a new one.
"""

from __future__ import annotations

from dataclasses import dataclass

UNKNOWN_LICENSE = "see the model card"


@dataclass(frozen=True)
class License:
    name: str  # Hub licence id where one exists (apache-2.0, mit, ...), else the licence's own title
    url: str = ""
    note: str = ""  # what the terms say about using outputs to train other models, when they say something


@dataclass(frozen=True)
class Benchmark:
    license: str | None  # as declared on the Hub card; None: not confirmed, see the dataset card
    bibtex: str
    terms: str = ""  # terms beyond the licence that bind whoever republishes its questions


PAPER_BIBTEX = """@misc{griot2026compressdistill,
  title  = {Compress-Distill: Reasoning Trace Compression for Efficient Knowledge Distillation},
  author = {Griot, Maxime and Scotti, Paul Steven and Abraham, Tanishq Mathew},
  year   = {2026},
  note   = {Universit\\'e catholique de Louvain and Sophont Inc.}
}"""

_APACHE = License("apache-2.0", "https://www.apache.org/licenses/LICENSE-2.0")
_LLAMA_NOTE = (
    'a model trained on these outputs and distributed must include "Llama" at the beginning of its name, '
    "and the licence's acceptable use policy applies"
)
# (lower-case substring of the model id, licence), first match wins
MODEL_LICENSES: tuple[tuple[str, License], ...] = (
    (
        "llama-3.3",
        License("Llama 3.3 Community License", "https://www.llama.com/llama3_3/license/", _LLAMA_NOTE),
    ),
    (
        "llama-3.2",
        License("Llama 3.2 Community License", "https://www.llama.com/llama3_2/license/", _LLAMA_NOTE),
    ),
    (
        "llama-3.1",
        License("Llama 3.1 Community License", "https://www.llama.com/llama3_1/license/", _LLAMA_NOTE),
    ),
    ("gpt-oss", _APACHE),
    ("qwen3", _APACHE),  # Qwen3 and Qwen3.5 open-weight models
    ("ministral-3", _APACHE),
    ("smollm2", _APACHE),
)


def model_license(model: str) -> License:
    """The licence of ``model``'s outputs (module docstring); ``UNKNOWN_LICENSE`` when no family matches."""
    lower = model.lower()
    return next((lic for key, lic in MODEL_LICENSES if key in lower), License(UNKNOWN_LICENSE))


def _bib(key: str, kind: str, title: str, author: str, venue: str, year: int) -> str:
    field = {"article": "journal", "inproceedings": "booktitle", "misc": "howpublished"}[kind]
    return (
        f"@{kind}{{{key},\n  title  = {{{title}}},\n  author = {{{author}}},\n"
        f"  {field} = {{{venue}}},\n  year   = {{{year}}}\n}}"
    )


_MMLU = _bib(
    "hendrycks2021mmlu", "inproceedings", "Measuring Massive Multitask Language Understanding",
    "Hendrycks, Dan and Burns, Collin and Basart, Steven and Zou, Andy and Mazeika, Mantas and Song, Dawn and "
    "Steinhardt, Jacob", "International Conference on Learning Representations", 2021,
)  # fmt: skip
_ARC = _bib(
    "clark2018arc", "misc", "Think you have Solved Question Answering? Try ARC, the AI2 Reasoning Challenge",
    "Clark, Peter and Cowhey, Isaac and Etzioni, Oren and Khot, Tushar and Sabharwal, Ashish and Schoenick, "
    "Carissa and Tafjord, Oyvind", "arXiv:1803.05457", 2018,
)  # fmt: skip

BENCHMARKS: dict[str, Benchmark] = {
    "gsm8k": Benchmark("mit", _bib(
        "cobbe2021gsm8k", "misc", "Training Verifiers to Solve Math Word Problems",
        "Cobbe, Karl and Kosaraju, Vineet and Bavarian, Mohammad and Chen, Mark and Jun, Heewoo and Kaiser, "
        "Lukasz and Plappert, Matthias and Tworek, Jerry and Hilton, Jacob and Nakano, Reiichiro and Hesse, "
        "Christopher and Schulman, John", "arXiv:2110.14168", 2021)),
    "multiarith": Benchmark(None, _bib(
        "roy2015multiarith", "inproceedings", "Solving General Arithmetic Word Problems", "Roy, Subhro and Roth, Dan",
        "Proceedings of the 2015 Conference on Empirical Methods in Natural Language Processing", 2015)),
    "svamp": Benchmark(None, _bib(
        "patel2021svamp", "inproceedings", "Are NLP Models really able to Solve Simple Math Word Problems?",
        "Patel, Arkil and Bhattamishra, Satwik and Goyal, Navin",
        "Proceedings of the 2021 Conference of the North American Chapter of the Association for Computational "
        "Linguistics: Human Language Technologies", 2021)),
    "aqua_rat": Benchmark("apache-2.0", _bib(
        "ling2017aqua", "inproceedings",
        "Program Induction by Rationale Generation: Learning to Solve and Explain Algebraic Word Problems",
        "Ling, Wang and Yogatama, Dani and Dyer, Chris and Blunsom, Phil",
        "Proceedings of the 55th Annual Meeting of the Association for Computational Linguistics", 2017)),
    "arc_challenge": Benchmark("cc-by-sa-4.0", _ARC),
    "arc_easy": Benchmark("cc-by-sa-4.0", _ARC),
    "gpqa_diamond": Benchmark("cc-by-4.0", _bib(
        "rein2024gpqa", "inproceedings", "GPQA: A Graduate-Level Google-Proof Q&A Benchmark",
        "Rein, David and Hou, Betty Li and Stickland, Asa Cooper and Petty, Jackson and Pang, Richard Yuanzhe and "
        "Dirani, Julien and Michael, Julian and Bowman, Samuel R.", "First Conference on Language Modeling", 2024),
        terms="gated: its terms ask that examples are not revealed in plain text or images online, so rows of "
        "this dataset must not be published openly (keep the repo private and gated, or leave gpqa_diamond out)"),
    "commonsense_qa": Benchmark("mit", _bib(
        "talmor2019commonsenseqa", "inproceedings",
        "CommonsenseQA: A Question Answering Challenge Targeting Commonsense Knowledge",
        "Talmor, Alon and Herzig, Jonathan and Lourie, Nicholas and Berant, Jonathan",
        "Proceedings of the 2019 Conference of the North American Chapter of the Association for Computational "
        "Linguistics: Human Language Technologies", 2019)),
    "medqa": Benchmark(None, _bib(
        "jin2021medqa", "article",
        "What Disease Does This Patient Have? A Large-Scale Open Domain Question Answering Dataset from Medical "
        "Exams", "Jin, Di and Pan, Eileen and Oufattole, Nassim and Weng, Wei-Hung and Fang, Hanyi and Szolovits, "
        "Peter", "Applied Sciences", 2021)),
    "medmcqa": Benchmark("apache-2.0", _bib(
        "pal2022medmcqa", "inproceedings",
        "MedMCQA: A Large-scale Multi-Subject Multi-Choice Dataset for Medical domain Question Answering",
        "Pal, Ankit and Umapathi, Logesh Kumar and Sankarasubbu, Malaikannan",
        "Proceedings of the Conference on Health, Inference, and Learning (PMLR 174)", 2022)),
    "medexpqa": Benchmark("cc-by-4.0", _bib(
        "alonso2024medexpqa", "article",
        "MedExpQA: Multilingual Benchmarking of Large Language Models for Medical Question Answering",
        "Alonso, I{\\~n}igo and Oronoz, Maite and Agerri, Rodrigo", "Artificial Intelligence in Medicine", 2024)),
    "mmlu_stem": Benchmark("mit", _MMLU),
    "mmlu_medical": Benchmark("mit", _MMLU),
    "mmlu_humanities": Benchmark("mit", _MMLU),
    "mmlu_social_sciences": Benchmark("mit", _MMLU),
    "mmlu_other": Benchmark("mit", _MMLU),
    "hellaswag": Benchmark("mit", _bib(
        "zellers2019hellaswag", "inproceedings", "HellaSwag: Can a Machine Really Finish Your Sentence?",
        "Zellers, Rowan and Holtzman, Ari and Bisk, Yonatan and Farhadi, Ali and Choi, Yejin",
        "Proceedings of the 57th Annual Meeting of the Association for Computational Linguistics", 2019)),
    "winogrande": Benchmark(None, _bib(
        "sakaguchi2021winogrande", "article", "WinoGrande: An Adversarial Winograd Schema Challenge at Scale",
        "Sakaguchi, Keisuke and Le Bras, Ronan and Bhagavatula, Chandra and Choi, Yejin",
        "Communications of the ACM", 2021)),
    "piqa": Benchmark(None, _bib(
        "bisk2020piqa", "inproceedings", "PIQA: Reasoning about Physical Commonsense in Natural Language",
        "Bisk, Yonatan and Zellers, Rowan and Le Bras, Ronan and Gao, Jianfeng and Choi, Yejin",
        "Thirty-Fourth AAAI Conference on Artificial Intelligence", 2020)),
    "boolq": Benchmark("cc-by-sa-3.0", _bib(
        "clark2019boolq", "inproceedings", "BoolQ: Exploring the Surprising Difficulty of Natural Yes/No Questions",
        "Clark, Christopher and Lee, Kenton and Chang, Ming-Wei and Kwiatkowski, Tom and Collins, Michael and "
        "Toutanova, Kristina", "Proceedings of the 2019 Conference of the North American Chapter of the "
        "Association for Computational Linguistics: Human Language Technologies", 2019)),
    "truthfulqa": Benchmark("apache-2.0", _bib(
        "lin2022truthfulqa", "inproceedings", "TruthfulQA: Measuring How Models Mimic Human Falsehoods",
        "Lin, Stephanie and Hilton, Jacob and Evans, Owain",
        "Proceedings of the 60th Annual Meeting of the Association for Computational Linguistics", 2022)),
}  # fmt: skip
