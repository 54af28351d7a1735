// The page's script: pick or drop a video, ask, and show the answer as the server streams it.
// It speaks the server's own OpenAI-compatible API (POST /v1/chat/completions with stream: true); the video goes
// up as a data: URL in a video_url part. No libraries, nothing fetched from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const drop = $("drop"), fileInput = $("video-file"), preview = $("preview"), question = $("question");
const modelSelect = $("model"), keyInput = $("api-key"), askButton = $("ask"), statusLine = $("status");
const answerBox = $("answer");
let chosenFile = null;

function headers() {
  const result = { "Content-Type": "application/json" };
  if (keyInput.value) result.Authorization = "Bearer " + keyInput.value;
  return result;
}

function setStatus(text) { statusLine.textContent = text; }

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (_) { /* not JSON: fall back to the status */ }
  return "HTTP " + response.status;
}

async function loadModels() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (!response.ok) { setStatus(await errorMessage(response)); return; }
  const body = await response.json();
  modelSelect.replaceChildren(...body.data.map((model) => new Option(model.id, model.id)));
  setStatus("");
}

function choose(file) {
  if (!file) return;
  chosenFile = file;
  preview.src = URL.createObjectURL(file);
  preview.style.display = "block";
  askButton.disabled = false;
  setStatus(file.name + " (" + Math.round(file.size / 1024) + " KiB)");
}

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function showAnswer(text, state) {
  answerBox.textContent = text;
  answerBox.dataset.state = state;
}

// Server-sent events: "data: {json}" lines separated by blank lines, ending with "data: [DONE]".
async function readStream(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", text = "", chunks = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (!event.startsWith("data: ")) continue;
      const data = event.slice(6);
      if (data === "[DONE]") { showAnswer(text, "done"); return; }
      const message = JSON.parse(data);
      if (message.error) { showAnswer(message.error.message, "error"); return; }
      const piece = (message.choices[0] && message.choices[0].delta.content) || "";
      if (piece) {
        text += piece;
        chunks += 1;
        answerBox.dataset.chunks = String(chunks);
        showAnswer(text, "streaming");
      }
    }
  }
  showAnswer(text || "the server closed the stream early", text ? "done" : "error");
}

async function ask() {
  if (!chosenFile) return;
  askButton.disabled = true;
  answerBox.dataset.chunks = "0";
  showAnswer("", "waiting");
  setStatus("uploading " + chosenFile.name + "…");
  try {
    const url = await readAsDataUrl(chosenFile);
    const body = {
      model: modelSelect.value || undefined,
      stream: true,
      messages: [{ role: "user", content: [
        { type: "video_url", video_url: { url: url } },
        { type: "text", text: question.value },
      ] }],
    };
    const response = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!response.ok) { showAnswer(await errorMessage(response), "error"); return; }
    setStatus("answering…");
    await readStream(response);
    setStatus(answerBox.dataset.state === "done" ? "done" : "");
  } catch (error) {
    showAnswer(String(error), "error");
  } finally {
    askButton.disabled = false;
  }
}

fileInput.addEventListener("change", () => choose(fileInput.files[0]));
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  choose(event.dataTransfer.files[0]);
});
askButton.addEventListener("click", ask);
if (window.VIDEOGEMMA_AUTH_REQUIRED) {
  $("key-row").classList.remove("hidden");
  keyInput.addEventListener("change", loadModels);
  setStatus("enter the API key");
} else {
  loadModels();
}
