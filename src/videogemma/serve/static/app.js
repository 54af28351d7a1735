// The page's script: pick or drop a video, ask, and show the answer as the server streams it; or, in camera
// mode, send the camera's frames to the live coach and show its feedback lines with their times.
// It speaks the server's own APIs: POST /v1/chat/completions with stream: true (the video goes up as a data:
// URL in a video_url part), and the coaching WebSocket /v1/coach/stream (a JSON start message, then each frame
// as 8 bytes of time, a little-endian double in seconds, and a JPEG). No libraries, nothing fetched from
// elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const drop = $("drop"), fileInput = $("video-file"), preview = $("preview"), question = $("question");
const modelSelect = $("model"), keyInput = $("api-key"), askButton = $("ask"), statusLine = $("status");
const answerBox = $("answer");
const cameraPanel = $("camera-panel"), cameraVideo = $("camera"), canvas = $("capture");
const startButton = $("camera-start"), stopButton = $("camera-stop"), feedbackList = $("feedback");
let chosenFile = null;
let coaching = null; // { media, socket, timer, origin, busy } while a coaching stream runs

const FRAME_QUALITY = 0.8; // JPEG quality of the frames sent
const FRAME_MAX_WIDTH = 640; // frames are scaled down to this width (the model reads far smaller ones)
const MAX_BUFFERED_BYTES = 1 << 20; // a frame is skipped while this much is still unsent: never fall behind
const MAX_FPS = 10;

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

// ---- camera mode: live coaching ---------------------------------------------------------------------------

function setMode(mode) {
  const camera = mode === "camera";
  drop.classList.toggle("hidden", camera);
  askButton.classList.toggle("hidden", camera);
  answerBox.classList.toggle("hidden", camera);
  cameraPanel.classList.toggle("hidden", !camera);
  $("camera-buttons").classList.toggle("hidden", !camera);
  feedbackList.classList.toggle("hidden", !camera);
  if (!camera) stopCoaching();
}

function streamUrl() {
  return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/coach/stream";
}

function coachingError(text) {
  const item = document.createElement("li");
  item.className = "error";
  item.textContent = text;
  feedbackList.append(item);
  feedbackList.dataset.state = "error";
  setStatus("");
}

function addFeedback(message) {
  const item = document.createElement("li");
  item.dataset.t = String(message.t);
  const time = document.createElement("span");
  time.className = "time";
  time.textContent = message.t.toFixed(1) + " s";
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = message.text;
  item.append(time, text);
  feedbackList.append(item);
  item.scrollIntoView({ block: "nearest" });
}

async function startCoaching() {
  startButton.disabled = true;
  feedbackList.replaceChildren();
  feedbackList.dataset.state = "starting";
  feedbackList.dataset.windows = "0";
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (error) {
    coachingError("the camera is not available: " + (error.message || error.name));
    startButton.disabled = false;
    return;
  }
  cameraVideo.srcObject = media;
  await cameraVideo.play();
  const socket = new WebSocket(streamUrl());
  socket.binaryType = "arraybuffer";
  coaching = { media, socket, timer: null, origin: null, busy: false };
  socket.onopen = () => socket.send(JSON.stringify({
    type: "start",
    model: modelSelect.value || undefined,
    prompt: question.value.trim() || undefined,
    api_key: keyInput.value || undefined,
  }));
  socket.onmessage = (event) => onCoachMessage(JSON.parse(event.data));
  socket.onclose = onCoachClose;
  stopButton.disabled = false;
  setStatus("connecting…");
}

function onCoachMessage(message) {
  if (message.type === "ready") {
    // Twice the rate the coach samples at (at most MAX_FPS), so that each of its grid frames is a fresh one.
    const fps = Math.min(MAX_FPS, Math.max(2, Math.ceil(2 / message.frame_step)));
    coaching.timer = setInterval(sendFrame, 1000 / fps);
    feedbackList.dataset.state = "live";
    setStatus("coaching with " + message.model + ": " + message.window + " s windows every " + message.stride + " s");
  } else if (message.type === "window") {
    feedbackList.dataset.windows = String(message.windows_run);
    setStatus("t " + message.end.toFixed(1) + " s | " + message.windows_run + " windows, " + message.windows_skipped +
      " skipped | " + message.latency_s.toFixed(2) + " s behind");
  } else if (message.type === "feedback") {
    addFeedback(message);
  } else if (message.type === "summary") {
    feedbackList.dataset.state = "done";
    feedbackList.dataset.summary = JSON.stringify(message);
    setStatus("done: " + message.windows_run + " windows over " + message.seconds.toFixed(1) + " s, " +
      message.feedbacks + " feedbacks");
  } else if (message.type === "error") {
    coachingError(message.message);
  }
}

function sendFrame() {
  const session = coaching;
  if (!session || session.busy || !cameraVideo.videoWidth) return;
  const socket = session.socket;
  if (socket.readyState !== WebSocket.OPEN || socket.bufferedAmount > MAX_BUFFERED_BYTES) return;
  const scale = Math.min(1, FRAME_MAX_WIDTH / cameraVideo.videoWidth);
  canvas.width = Math.round(cameraVideo.videoWidth * scale);
  canvas.height = Math.round(cameraVideo.videoHeight * scale);
  canvas.getContext("2d").drawImage(cameraVideo, 0, 0, canvas.width, canvas.height);
  const now = performance.now();
  if (session.origin === null) session.origin = now;
  const time = (now - session.origin) / 1000; // seconds since the first frame sent
  session.busy = true; // one frame at a time: times go out in order
  canvas.toBlob(async (blob) => {
    try {
      if (!blob || socket.readyState !== WebSocket.OPEN) return;
      const image = new Uint8Array(await blob.arrayBuffer());
      const message = new Uint8Array(8 + image.byteLength);
      new DataView(message.buffer).setFloat64(0, time, true);
      message.set(image, 8);
      socket.send(message);
    } finally {
      session.busy = false;
    }
  }, "image/jpeg", FRAME_QUALITY);
}

function releaseCamera(session) {
  clearInterval(session.timer);
  session.media.getTracks().forEach((track) => track.stop());
  cameraVideo.srcObject = null;
}

// The server runs the windows the frames sent made due, then sends its summary and closes.
function stopCoaching() {
  if (!coaching) return;
  releaseCamera(coaching);
  if (coaching.socket.readyState === WebSocket.OPEN) coaching.socket.send(JSON.stringify({ type: "end" }));
  stopButton.disabled = true;
  setStatus("finishing the last windows…");
}

function onCoachClose(event) {
  if (coaching) releaseCamera(coaching);
  coaching = null;
  if (event.code !== 1000 && feedbackList.dataset.state !== "error") {
    coachingError("the coaching stream closed: " + (event.reason || "code " + event.code));
  }
  startButton.disabled = false;
  stopButton.disabled = true;
}

document.querySelectorAll("input[name=mode]").forEach((radio) => {
  radio.addEventListener("change", () => setMode(radio.value));
});
startButton.addEventListener("click", startCoaching);
stopButton.addEventListener("click", stopCoaching);

// ---- file mode -----------------------------------------------------------------------------------------------

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
