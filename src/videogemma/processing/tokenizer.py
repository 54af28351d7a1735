"""The `tiny` preset's own tokenizer: a small byte-level BPE with Gemma-3n's special-token names.

Real Gemma-3n weights come with Google's 262k-token tokenizer; the `tiny` preset cannot use it (its
embedding table would dwarf the model), so it trains its own, here, from a corpus embedded in this file:
plain English plus the exercise and form-feedback vocabulary of QVED. Training is deterministic, so every
call builds the same tokenizer file.

Layout (config.py's `TINY_*` constants):

    0 .. 7                      TINY_SPECIAL_TOKENS (<pad>, <eos>, <bos>, <unk>, <mask>, <start_of_turn>, ...)
    8 .. TINY_TEXT_VOCAB-1      the 256 byte tokens, then BPE merges
    TINY_TEXT_VOCAB ..          TINY_MULTIMODAL_TOKENS (<end_of_image>, <image_soft_token>, ...)

Byte-level BPE has every byte in its base alphabet, so any text, in any script, round-trips exactly.
The multimodal tokens sit above the per-layer-input table exactly as in Gemma-3n, whose per-layer
embedding covers only the text vocabulary.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from videogemma.config import TINY_MULTIMODAL_TOKENS, TINY_SPECIAL_TOKENS, TINY_TEXT_VOCAB, TINY_VOCAB

# Training text. Sentences in the style of the QVED labels, feedbacks and prompts, then everyday English,
# so that both the dataset's answers and ordinary prompts tokenize into few tokens.
TINY_TOKENIZER_CORPUS = """\
Please evaluate the exercise form shown. What mistakes, if any, are present, and what corrections would you recommend?
Please evaluate the exercise form shown. What feedback would you provide to improve the performance?
Describe the video in detail. What exercise is the person doing?
user
How is my form?
model
Keep your back straight and go a bit deeper.
user
Which exercise is this?
model
This is a plank.
user
What should I fix?
model
Nothing, your form is good.
squats - knees caving in; push the knees out over the toes
squats - knees are caving inward; push the knees out over the toes
squats - not deep enough; go a bit deeper on the squat
squats - heels lifting off the floor; keep your heels down and your weight on the heels
squats - leaning forward too much; keep your chest up and your back straight
squats - good form; the user is squatting with correct depth and a straight back
pushups - hips sagging; keep your body in a straight line from head to heels
pushups - hips too high; lower your hips and tighten your core
pushups - not going low enough; lower your chest closer to the floor
pushups - elbows flaring out; keep your elbows closer to your body
pushups - good form; the user is doing push-ups with a straight back
alternating forward lunges - front knee past the toes; step further forward
alternating forward lunges - back knee not low enough; lower your back knee toward the floor
alternating forward lunges - torso leaning forward; keep your torso upright
alternating forward lunges - good form; the user is alternating legs with control
jumping jacks - arms not fully raised; raise your arms all the way above your head
jumping jacks - feet not wide enough; jump your feet wider apart
jumping jacks - good form; the user is jumping with a steady rhythm
high knees - knees not high enough; bring your knees up to hip height
high knees - leaning back; stay upright and pump your arms
high knees - good form; the user is running in place with high knees
mountain-climbers - hips too high; keep your hips level with your shoulders
mountain-climbers - knees not reaching the chest; drive your knees toward your chest
mountain-climbers - good form; the user keeps a strong plank while moving the legs
plank taps - hips rocking side to side; keep your hips still while tapping
plank taps - good form; the user taps each shoulder with a stable plank
floor touches - knees locked; bend your knees slightly as you reach down
floor touches - good form; the user touches the floor with a flat back
shoulder gators - arms bent; keep your arms straight and open wide
shoulder gators - good form; the user opens and closes the arms with control
toe touch - not reaching the toes; reach further down toward your toes
toe touch - good form; the user touches the toes with straight legs
elbow plank - hips sagging; squeeze your glutes and lift your hips
high plank - shoulders not over the wrists; move your shoulders over your wrists
side plank - hips dropping; lift your hips to keep a straight line
glutes bridge - hips not fully extended; push through your heels and lift your hips higher
alternating single leg glutes bridge - hips rotating; keep your hips level as you lift each leg
cat-cow pose - moving too fast; move slowly and follow your breath
glute hamstring walkout - heels lifting; keep your heels on the floor as you walk out
heel lift - lifting too fast; rise slowly onto your toes and lower with control
lunges leg out in front - front leg bent; keep the front leg straight
opposite arm and leg lifts on knees - back arching; keep your back flat and your core tight
tricep stretch (right arm) - User is holding the stretch
tricep stretch (left arm) - elbow pointing forward; point your elbow up toward the ceiling
Go a bit deeper on the squat. Keep your chest up. Push your knees out. Straighten your back.
Keep your core tight and breathe out as you push up. Control the movement on the way down.
Great job, keep going! Nice and slow. Squeeze at the top. Keep your neck neutral and look forward.
Your form looks good. Try to keep a steady pace. Engage your glutes. Spread your weight evenly.
Keep your arms straight, your hips level, your feet flat, your shoulders back and your head up.
No feedback available. The person is standing still. The person is sitting on the floor.
The man in a black shirt is exercising in a living room. The woman in a red top is working out at home.
A person is doing squats in front of the camera. Someone is doing push-ups on a yoga mat.
The quick brown fox jumps over the lazy dog. It was a bright cold day in April, and the clocks were striking.
The video shows one person doing one exercise. The camera is fixed and the light is good.
Answer the question about the video. Watch the whole clip before you answer. Be short and clear.
Hello, how are you today? I am fine, thank you. Let me know if you have any questions.
One, two, three, four, five, six, seven, eight, nine, ten. First, second, third, last, next, again.
left right up down front back top bottom inside outside before after during while until because
the a an and or but if then else when where why how what which who whose this that these those
is are was were be been being have has had do does did can could will would should may might must
I you he she it we they me him her us them my your his its our their mine yours
person people user man woman body head neck shoulder shoulders arm arms elbow elbows wrist wrists hand hands
chest back spine core hip hips glute glutes leg legs thigh knee knees ankle ankles foot feet heel heels toe toes
exercise exercises workout training movement motion repetition repetitions set sets pace rhythm balance
squat squats squatting lunge lunges lunging pushup push-up push-ups plank planks jump jumping stretch stretching
bend bending lift lifting lower lowering raise raising rotate rotating twist twisting reach reaching hold holding
keep keeping push pushing pull pulling step stepping move moving stand standing sit sitting walk walking run running
straight bent flat level upright neutral tight loose stable steady slow slowly fast quickly wide narrow high low deep deeper
caving inward outward forward backward sideways sagging arching rounding dropping flaring locked extended
good great better best bad wrong correct correctly proper properly mistake mistakes error errors form technique
time second seconds minute minutes frame frames video clip camera floor wall mat room light
please thank thanks yes no not very more less most too enough almost always never often sometimes
"""


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Train the `tiny` preset's tokenizer on the embedded corpus (deterministic, ~0.1 s)."""
    num_special = len(TINY_SPECIAL_TOKENS)
    tokenizer = Tokenizer(models.BPE())
    # No prefix space: "user\n" must stay "user\n", and decode(encode(text)) must be text.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_TEXT_VOCAB,
        special_tokens=list(TINY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=1,
        show_progress=False,
    )
    tokenizer.train_from_iterator(TINY_TOKENIZER_CORPUS.splitlines(), trainer=trainer)
    if tokenizer.get_vocab_size() != TINY_TEXT_VOCAB:
        # Only a corpus edit can cause this: it must offer enough merges to fill the text vocabulary.
        raise RuntimeError(
            f"the embedded corpus yields {tokenizer.get_vocab_size()} BPE tokens, "
            f"{TINY_TEXT_VOCAB} are needed (special {num_special} + 256 bytes + merges)"
        )
    # Appended in order, so they land at TINY_TEXT_VOCAB, TINY_TEXT_VOCAB + 1, ...
    tokenizer.add_special_tokens(list(TINY_MULTIMODAL_TOKENS))
    # Like Gemma's tokenizer, plain `tokenizer(text)` starts with <bos>.
    bos_id = TINY_SPECIAL_TOKENS.index("<bos>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos_id)]
    )
    assert tokenizer.get_vocab_size() <= TINY_VOCAB
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        mask_token="<mask>",
        clean_up_tokenization_spaces=False,
    )
