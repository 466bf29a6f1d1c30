"""The text step 3 sends to a generator, byte for byte as the published code builds it.

The strings are inputs to the models and the published accuracies were obtained with them, so they are kept
exactly, including their missing spaces and the "visuall" typo. Two prompt styles use them:

- ``official`` (the default): what the authors' code sends. Chat LLMs get a system message and the prompt (for
  InfoSeek, a worked example sits *inside* the same user message); VLMs get one instruction string glued to the
  prompt as plain text.
- ``omgm``: the same strings, but every VLM sees the image and every model gets its own chat template (see each
  generator family).
"""
from __future__ import annotations

PROMPT_STYLES = ("official", "omgm")
DATASETS = ("evqa", "infoseek")

EVQA_QUESTION_SUFFIX = "\nThe answer is:"
INFOSEEK_QUESTION_SUFFIX = "\nJust answer the questions , no explanations needed. Short answer is:"

INFOSEEK_EXAMPLE = (
    "- Context: # Wiki Article: Dolomites\n## Section Title: Dolomites\nThe Dolomites, also known as the Dolomite "
    "Mountains, Dolomite Alps or Dolomitic Alps, are a mountain range located in northeastern Italy. The Dolomites "
    "are located in the regions of Veneto, Trentino-Alto Adige/S\u00fcdtirol and Friuli Venezia Giulia, covering an "
    "area shared between the provinces of Belluno, Vicenza, Verona, Trentino, South Tyrol, Udine and Pordenone."
    "\n- Question: Which city or region does this mountain locate in?"
    "\nJust answer the questions , no explanations needed. Short answer is: Province of Belluno\n\n")

CHAT_SYSTEM = {
    "evqa": ("You are a helpful assistant for answering encyclopedic questions."
             "If the context does not contain the information required to answer the question, you should answer "
             "the question using internal model knowledge."),
    "infoseek": ("You are a helpful assistant for answering encyclopedic questions. Do not answer anything else."
                 "If you need to answer questions about numbers or time, please output the corresponding numerical "
                 "format directly."
                 "If the context does not contain the information required to answer the question, you should "
                 "answer the question using internal model knowledge."),
}

_VLM_HEAD = ("Answer the encyclopedic question about the given image."
             "Don't mention the visuall content of image in your output. "
             "Directly output the answer of the question according to the Context.")
VLM_INSTRUCTION = {
    "evqa": _VLM_HEAD + ("If the context does not contain the information required to answer the question, you "
                         "should answer the question using internal model knowledge.\n "),
    "infoseek": _VLM_HEAD + ("\nIf you need to answer questions about numbers or time, please output the "
                             "corresponding numerical format directly.\n"
                             "If the context does not contain the information required to answer the question, you "
                             "should answer the question using internal model knowledge.\n "
                             "There is an example:\n" + INFOSEEK_EXAMPLE),
}

# LLaVA-1.5's own conversation template (``llava_v1``), used for original-format LLaVA in the omgm style
LLAVA_V1_SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
                   "The assistant gives helpful, detailed, and polite answers to the human's questions.")


def check_style(style: str) -> str:
    if style not in PROMPT_STYLES:
        from omgm.errors import OmgmError

        raise OmgmError(f"unknown prompt style {style!r}: use one of {', '.join(PROMPT_STYLES)}")
    return style


def prompt_core(question: str, context: str, dataset: str) -> str:
    """``- Context: ...\\n- Question: ...`` and the dataset's answer cue."""
    suffix = INFOSEEK_QUESTION_SUFFIX if dataset == "infoseek" else EVQA_QUESTION_SUFFIX
    return "- Context: " + context + "\n- Question: " + question + suffix


def chat_messages(question: str, context: str, dataset: str) -> list[dict]:
    """System + user messages for a chat LLM (Llama-3, Mistral); InfoSeek's example opens the user message."""
    core = prompt_core(question, context, dataset)
    user = INFOSEEK_EXAMPLE + core if dataset == "infoseek" else core
    return [{"role": "system", "content": CHAT_SYSTEM[dataset]}, {"role": "user", "content": user}]


def vlm_text(question: str, context: str, dataset: str) -> str:
    """The one string a VLM reads: the dataset's instruction, then the prompt core (plain concatenation)."""
    return VLM_INSTRUCTION[dataset] + prompt_core(question, context, dataset)


def llava_v1_prompt(text: str) -> str:
    """LLaVA-1.5's conversation template with the image placeholder first (omgm style, original-format LLaVA)."""
    return LLAVA_V1_SYSTEM + " USER: <image>\n" + text + " ASSISTANT:"


def merge_system(messages: list[dict]) -> list[dict]:
    """For chat templates that reject a system role: the system text opens the first user turn."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
    return rest
