"""The paper's five input settings, shared by the data layer (Bayes AUCs) and the models."""

SETTINGS = {
    "us_lnm": ("us_lnm",),
    "bmode": ("bmode",),
    "ceus": ("ceus",),
    "dual": ("bmode", "ceus"),
    "triple": ("bmode", "ceus", "us_lnm"),
}
