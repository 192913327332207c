"""Names shared by the generator, the models, the service and the evaluation."""

# The ten scored joints, in the order of the original service's `scores` object. PIP1 is the thumb's
# interphalangeal joint.
JOINT_NAMES: tuple[str, ...] = (
    "mcp1",
    "mcp2",
    "mcp3",
    "mcp4",
    "mcp5",
    "pip1",
    "pip2",
    "pip3",
    "pip4",
    "pip5",
)

# Neighbouring MCP joints whose median spacing measures the hand's size in pixels: it sets the joint crop's side
# (deepxray.imaging.crop) and the evaluation's localisation tolerance. The thumb's MCP sits far from the other four
# and moves a lot, so it does not measure the hand.
MCP_NEIGHBOURS: tuple[tuple[str, str], ...] = (("mcp2", "mcp3"), ("mcp3", "mcp4"), ("mcp4", "mcp5"))

# Ratingen erosion classes: 0 intact, then the destroyed share of the joint surface in 20 % bands.
RATINGEN_CLASSES: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
RATINGEN_BANDS: dict[int, tuple[float, float]] = {
    0: (0.0, 0.0),
    1: (0.08, 0.20),
    2: (0.21, 0.40),
    3: (0.41, 0.60),
    4: (0.61, 0.80),
    5: (0.81, 1.00),
}

# What the body-part model tells apart. Only `left_hand` and `right_hand` are scored.
BODY_PARTS: tuple[str, ...] = (
    "left_hand",
    "right_hand",
    "chest",
    "foot",
    "other_radiograph",
    "not_radiograph",
)
HAND_PARTS: frozenset[str] = frozenset({"left_hand", "right_hand"})
# A film showing both hands side by side: not a class of the body-part model (each hand is found on the film and
# classified on its own), but a label of the answer and of the phantom generator.
BOTH_HANDS = "both_hands"

RESEARCH_NOTICE = "research use only; demo models trained on synthetic radiographs"

# The chest-findings model's labels: CheXpert's fourteen observations, in CheXpert's order. "No Finding" is
# positive exactly when none of the other thirteen is (deepxray.phantoms.chest).
CHEST_FINDINGS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
NO_FINDING = "No Finding"
