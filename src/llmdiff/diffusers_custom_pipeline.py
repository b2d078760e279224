"""The file diffusers' custom-pipeline loader imports for an llmdiff model folder (nothing is downloaded):

    from diffusers import DiffusionPipeline
    from llmdiff.pipelines import CUSTOM_PIPELINE  # the path of this file

    pipe = DiffusionPipeline.from_pretrained("models/shapes-lidit", custom_pipeline=CUSTOM_PIPELINE,
                                             trust_remote_code=True)

diffusers asks for ``trust_remote_code`` before it imports any file it is pointed at; this one only imports
the installed llmdiff package. Every denoiser class is imported because diffusers resolves a component's
class only in modules that are already imported.
"""

from llmdiff.denoisers import KINDS, denoiser_class
from llmdiff.diffusers_pipeline import LLMDiffPipeline  # noqa: F401

for kind in KINDS:
    denoiser_class(kind)
