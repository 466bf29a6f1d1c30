"""The prompts of step 3 (SPEC.md, "Step 3").

Exact strings from the published code: the prompt core and the InfoSeek suffix (note its " , "). The chat
LLMs' system prompt and the InfoSeek worked example (Dolomites -> Province of Belluno) follow the published
code's structure; their wording here is ours (SPEC.md names them without quoting them) and is what the
README documents. VLMs receive the image and the core prompt, with no system prompt.
"""
from __future__ import annotations

PROMPT_CORE = "- Context: {section}\n- Question: {question}\nThe answer is:"
INFOSEEK_SUFFIX = "\nJust answer the questions , no explanations needed. Short answer is:"
SYSTEM_PROMPT = ("You are a helpful assistant for encyclopedic question answering. You are given a section of a "
                 "Wikipedia article as context and a question about the subject of an image. Answer the question "
                 "using the context; answer briefly.")
INFOSEEK_EXAMPLE_CONTEXT = (
    "The Dolomites are a mountain range in northeastern Italy. They form part of the Southern Limestone Alps and "
    "extend from the River Adige in the west to the Piave Valley in the east. The Dolomites are located in the "
    "regions of Veneto, Trentino-Alto Adige/Südtirol and Friuli Venezia Giulia, covering an area shared between "
    "the provinces of Belluno, Vicenza, Verona, Trentino, South Tyrol, Udine and Pordenone.")
INFOSEEK_EXAMPLE_QUESTION = "Which province is this mountain range mostly located in?"
INFOSEEK_EXAMPLE_ANSWER = "Province of Belluno"


def user_prompt(question: str, section: str, infoseek: bool) -> str:
    """The core prompt, with the InfoSeek suffix for InfoSeek questions."""
    text = PROMPT_CORE.format(section=section, question=question)
    return text + INFOSEEK_SUFFIX if infoseek else text


def chat_messages(question: str, section: str, infoseek: bool) -> list[dict]:
    """Messages for a chat LLM (Llama-3, Mistral): system prompt, the InfoSeek worked example, the question."""
    msgs = [{"role": "system", "content": SYSTEM_PROMPT}]
    if infoseek:
        msgs += [{"role": "user", "content": user_prompt(INFOSEEK_EXAMPLE_QUESTION, INFOSEEK_EXAMPLE_CONTEXT, True)},
                 {"role": "assistant", "content": INFOSEEK_EXAMPLE_ANSWER}]
    msgs.append({"role": "user", "content": user_prompt(question, section, infoseek)})
    return msgs


def vlm_messages(question: str, section: str, infoseek: bool) -> list[dict]:
    """Messages for a VLM (LLaVA-1.5, InternVL2.5): the image, then the core prompt."""
    return [{"role": "user", "content": [{"type": "image"},
                                         {"type": "text", "text": user_prompt(question, section, infoseek)}]}]


def merge_system(messages: list[dict]) -> list[dict]:
    """For chat templates without a system role (Mistral-7B-Instruct-v0.2): prepend it to the first user turn."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
    return rest
