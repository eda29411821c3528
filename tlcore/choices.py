"""The choices the engine's settings take, and the dataset layout users are shown, in a module that
imports nothing: the CLI builds its parser from them without loading torch, so `tlcore --help` and a
mistyped option answer at once (they took ~9 s of imports on a 2-core machine). Their home modules
(tlcore.finetune, tlcore.vis.objectives, tlcore.data) export them from here."""

# A trial's choices: TrialConfig checks them, the page and the CLI list them.
OPTIMIZERS = ("sgd", "adamw")
AUGMENTATIONS = ("flip", "crop")
BN_MODES = ("frozen", "train")  # BatchNorm statistics in frozen blocks: kept, or updated on the data
PRECISIONS = ("auto", "float32", "bfloat16")  # auto: device.mixed_dtype (CUDA, AMX CPUs), else fp32
SCHEDULES = ("cosine", "constant")  # cosine: a short linear warm-up, then cosine decay to zero

# A dataset's square resolution, px: the loader refuses others, the CLI's parser at once.
RESOLUTION_PX = (8, 512)

# What a feature visualisation optimises (tlcore.vis.objectives).
KINDS: tuple[str, ...] = ("channel", "neuron", "layer", "direction")

# scikit-image's bundled photos DeepDream and predict offer (tlcore.data.builtin).
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
# The generated built-ins make this many images per class unless asked for another count.
GENERATED_PER_CLASS = {"textures": 150, "shapes": 200}  # textures: crops of scikit-image's photos

VALID_LAYOUT = """A valid dataset is one folder per class, images inside:
    my_data/
      cats/  img001.jpg  img002.png ...
      dogs/  img101.jpg ...
(zip that folder, upload it, or give its path; an extra top level such as my_data/train/ is fine)."""
