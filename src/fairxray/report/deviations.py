"""The report's deviations table: every choice that still differs from the authors' released code
(github.com/mu9enn/fair_analysis_med_clip, commit f130500) or from an upstream model's own code,
what differs, why, and its measured effect. Effects measured on random-init models say so (the
real weights are not available offline). ``fairxray.report.build`` renders it."""

from __future__ import annotations

DEVIATIONS: tuple[tuple[str, str], ...] = (
    (
        "Class order",
        "Every per-class quantity uses data.classes (the training label order). The released "
        "calculate_metrics.py hard-codes another disease order, so its per-disease F1 columns are "
        "mislabelled and its ECE gap compares probabilities with the wrong one-hot columns (defect "
        "5).",
    ),
    (
        "Calibration on probabilities",
        "ECE_delta (paper variant) is computed on softmax probabilities; the released code fed raw "
        "logits (defect 6), which makes |p - y| meaningless. A binned top-label ECE with fixed "
        "equal-width bins on [0, 1] is reported beside it (ece_gap/<attr>/binned).",
    ),
    (
        "Age groups",
        "Groups come from the age_group column (left-closed bins from data.age_bins). The released "
        "equalized-odds code used age ranges [0, 60] and [60, 150] with <= on both ends, so "
        "60-year-olds counted in both groups.",
    ),
    (
        "Undefined rates are NaN, not 0",
        "Where a group has no image of a class (TPR undefined) or only that class (FPR undefined), "
        "or is smaller than metrics.min_group_size, the value is NaN with a warning; the released "
        "code wrote 0 for such rates, silently shrinking EqOdds.",
    ),
    (
        "Per-disease F1 of an absent class",
        "f1/<Class> is NaN for a class absent from the test set; the released code used "
        "zero_division=1. Identical whenever every class is present (always, on NIH 6x200). The "
        "paper variant of F1_delta keeps zero_division=1 exactly.",
    ),
    (
        "Additional variants",
        "Beside the paper's signed F1_delta, mean-of-(|dTPR|+|dFPR|)/2 EqOdds and un-binned "
        "ECE_delta (two groups only), the report gives the max-min macro-F1 gap (fairlearn "
        "MetricFrame), fairlearn's worst-case equalized-odds difference per class (max and mean "
        "over classes) and the binned ECE gap, all defined for any number of groups and for age x "
        "sex intersections.",
    ),
    (
        "Uncertainty",
        "Every metric carries a percentile bootstrap interval that resamples patients (not images),"
        " and runs are repeated over params.seeds; the paper reports single numbers. Max-min gaps "
        "are non-negative and biased upwards under resampling, so their percentile interval can "
        "exclude a small point estimate; the signed paper F1_delta does not have this problem.",
    ),
    (
        "Split protocol",
        "The paper's nih6x200 sampling (with replacement where a cell is short) is reproduced "
        "exactly as `nih6x200-paper` and its leakage measured in the split manifest (29 repeated "
        "image ids; 9 images and 23 patients in both train and test, defect 7). `nih6x200-clean` is"
        " the same design with each patient used once; data.protocol says which one these runs "
        "used.",
    ),
    (
        "LoRA as released, and trained",
        "train.lora_config: model (the paper profile) reproduces the released LoRA per model "
        "(ModelSpec.lora): rank 16 on the ViT attention's fused in-projection only, rank 4 on every"
        " ResNet bottleneck conv of layer1-4, the update B @ A added with scale 1 (peft's "
        "alpha/rank would give 1/16 at the released alpha 1; peft is given alpha = rank). Adapter "
        "sizes: CLIP ViT-B and BiomedCLIP 589,824 parameters, MedCLIP-ResNet and GLoRIA 294,144, "
        "MedCLIP-ViT (Swin-T) 423,936 (tests: closed-form counts, scale 1, adapters move in "
        "training). Still different: the released ViT LoRA wrote its update into "
        "in_proj_weight.data, outside autograd, so it never trained (defect 1); here peft adds it "
        "in the forward pass, so it does. The released code only found OpenAI-CLIP names (defect "
        "2): BiomedCLIP's fused qkv and Swin's separate q, k, v (rank 16 each) are this project's "
        "analogues. The sizes differ across families (294,144 vs 589,824), so train.lora_config: "
        "equal_budget gives each model the rank closest to train.lora_budget adapter parameters "
        "(589,824: ViT rank 16, ResNet rank 8 = 588,288, Swin rank 22 = 582,912).",
    ),
    (
        "Frozen backbones stay frozen; their augmentation is cached",
        "Linear probe and MLP train heads on embeddings computed with the backbone in eval mode; "
        "LoRA keeps the backbone's BatchNorm in eval mode. The released code left BatchNorm in "
        "train mode, so its statistics drifted in LP/MLP/LoRA (defect 3). The released code "
        "augmented every method afresh each epoch; here the frozen methods see "
        "train.frozen_augment_views cached augmented views per training image (the paper profile: "
        "10, one drawn per image each epoch), so over 100 epochs an image shows at most 10 distinct"
        " augmentations instead of up to 100. benchmarks/embed_cache.py reports the encode time and"
        " disk cost of the views. The demo keeps 0 (no augmentation for frozen methods).",
    ),
    (
        "Shuffled training",
        "Each epoch visits the training set in a seeded random order; the released loader was not "
        "shuffled over a CSV ordered cell by cell (defect 4).",
    ),
    (
        "Zero-shot prompts and rules",
        "The paper's zero-shot prompts and decision rule are unknown (the released implementation "
        "is commented out); no model ships NIH prompts. Prompts: a documented set per model family "
        "over natural-language disease names (fairxray.adapt.zero_shot.PROMPT_SCHEMES, source of "
        "each in PROMPT_SOURCES). GLoRIA's own CheXpert prompt generator covers 5 CheXpert classes "
        "(no pneumothorax) and MedCLIP's covers CheXpert/COVID classes, so neither is used. Rules "
        "follow upstream (train.zero_shot_rule: model): GLoRIA averages its global cosine and its "
        "local word-region similarity, takes the maximum over a class's prompts and standardises "
        "each class over the scored images (upstream's evaluation batch; no labels used); MedCLIP "
        "pads a class's prompts together, averages over the padding and averages logit_scale x "
        "cosine over the prompts; CLIP and BiomedCLIP use softmax(logit_scale x cosine) with the "
        "logit scale from their weights. Probabilities are the softmax of these scores (upstream "
        "stops at the argmax). train.zero_shot_rule: cosine_softmax keeps the earlier rule for "
        "every model (GLoRIA: global embedding only, mean prompt embedding, softmax at temperature "
        "10). The ONNX export of zero_shot implements cosine_softmax only.",
    ),
    (
        "Multi-label training and zero-shot (extension)",
        "The paper is multi-class only (softmax over 6 classes). Under data.task: multilabel every "
        "method has one logit per label, trained with binary cross-entropy averaged over the "
        "observed targets (NaN = masked), probabilities are sigmoids, and epochs are selected on "
        "validation macro AUROC or loss. Zero-shot scores each label's positive and negative "
        "prompt set ('<finding>' against 'no <finding>' in the model's templates; No Finding "
        "against 'acute cardiopulmonary findings') and takes the softmax over the pair, "
        "CheXzero's rule (Tiu et al. 2022), at the model's logit scale where CheXzero uses the "
        "raw cosine (sharper probabilities, the same ranking and AUROC). Mitigations are not "
        "applied to the multi-label task.",
    ),
    (
        "Images decoded once",
        "Images are decoded once into a uint8 cache (grayscale, area-downsampled) and each model's "
        "own preprocessing and the paper's augmentation (flips, rotation, jitter) run as tensor "
        "operations; the released code decoded and augmented PNGs with PIL every epoch.",
    ),
    (
        "GLoRIA text as upstream cleans it",
        "Prompts pass through GLoRIA's own report cleaning (upstream process_text): sentences split"
        " at numbered-list markers and full stops, sentences of one word dropped, ASCII only. A "
        "one-word prompt therefore encodes as [CLS] [SEP], as upstream does; GLoRIA's prompt set "
        "has no one-word prompts. Measured on a random-init GLoRIA (generated vocabulary, no real "
        "weights available): the earlier cleaning kept single words and changed the '{}' prompt of "
        "4 of the 6 classes (cosine 0.73-0.75 against upstream's cleaning; 1.0 for the two-word "
        "names). Upstream's local similarity counts a prompt's characters, not its words "
        "(cap_lens); kept as is.",
    ),
    (
        "MedCLIP text embedding outside zero-shot",
        "encode_text averages BERT states over real tokens only (a prompt's embedding does not "
        "depend on its batch); zero-shot uses upstream's batching (a class's prompts padded "
        "together, averaged over the padding too). Measured on a random-init MedCLIP-ResNet "
        "(generated vocabulary): per-prompt cosine between the two 0.97-1.00, class-mean embeddings"
        " 0.995.",
    ),
    (
        "Resizing vs PIL",
        "Models resize the cached 8-bit images as tensors in PIL's two passes (clipped 8-bit "
        "intermediate); measured against PIL on identical input: at most 2 grey levels apart, more "
        "than 1 level in at most 0.06 % of values (uniform noise, bicubic and bilinear). A single "
        "2-D float resize differed by up to 18 levels on noise.",
    ),
)
