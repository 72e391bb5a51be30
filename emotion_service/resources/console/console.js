// The web console of the speech emotion service: plain JavaScript, no build step, no CDN.
// Every URL is relative to the page, so the console works at / and under a proxy's prefix.
"use strict";

const TEXT = {
  zh: {
    title: "语音情感分析控制台", language: "语言", apiKey: "API 密钥", apiKeyHint: "仅保存在本标签页",
    tabFile: "文件", tabLive: "实时", tabInterview: "面试",
    dropHint: "将录音拖到这里，或按 Enter 选择文件", analyze: "分析", analyzing: "分析中…",
    record: "录音", stop: "停止", timeline: "时间线", connecting: "连接中…", recording: "录音中",
    stopped: "已停止", speaking: "说话中", silent: "静音",
    jobFile: "较长的录音", ranges: "问题（可选）：每行一个，起止秒数，然后是标签",
    submitJob: "分析面试", exportJson: "导出 JSON", exportCsv: "导出 CSV",
    queued: "排队中", running: "分析中", done: "完成", failed: "失败",
    confidence: "置信度", score: "得分", level: "置信等级", type: "类型", advice: "建议",
    probabilities: "概率", delivery: "表达指标", assessment: "评估", summary: "总结",
    duration: "时长 (s)", speaking_time: "说话时间 (s)", speaking_ratio: "说话占比", pause_count: "停顿次数",
    mean_pause: "平均停顿 (s)", longest_pause: "最长停顿 (s)", syllables: "音节数", speech_rate: "语速 (音节/s)",
    articulation_rate: "发音速率 (音节/s)", pitch_median_hz: "音高中位数 (Hz)", pitch_sd_semitones: "音高变化 (半音)",
    pitch_range_semitones: "音域 (半音)", loudness_db: "响度 (dBFS)", loudness_sd_db: "响度变化 (dB)",
    voiced_ratio: "浊音占比", voice_breaks: "嗓音中断",
    segments: "片段数", elapsed: "已录 (s)", lastEmotion: "最近情绪", dominant: "主要情绪", stability: "稳定性",
    changes: "情绪变化", direction: "趋势", arousal: "唤醒度", valence: "效价", pauses: "停顿", questions: "问题",
    noSpeech: "没有检测到语音", noMic: "此浏览器无法录音（需要麦克风权限与 MediaRecorder）。",
    network: "无法连接到服务", chooseFile: "请先选择一个录音文件。", badRanges: "问题行的格式应为“开始-结束 标签”，例如 0-95 Q1。",
    settled: "趋于平稳", tensed: "趋于紧张", steady: "保持稳定", emotionOff: "情感识别已关闭：仅提供表达指标。",
  },
  en: {
    title: "Speech emotion console", language: "Language", apiKey: "API key", apiKeyHint: "kept in this tab only",
    tabFile: "File", tabLive: "Live", tabInterview: "Interview",
    dropHint: "Drop a recording here, or press Enter to choose one", analyze: "Analyse", analyzing: "Analysing…",
    record: "Record", stop: "Stop", timeline: "Timeline", connecting: "Connecting…", recording: "Recording",
    stopped: "Stopped", speaking: "speaking", silent: "silent",
    jobFile: "Long recording", ranges: "Questions (optional): one per line, start-end in seconds, then a label",
    submitJob: "Analyse interview", exportJson: "Export JSON", exportCsv: "Export CSV",
    queued: "Queued", running: "Running", done: "Done", failed: "Failed",
    confidence: "Confidence", score: "Score", level: "Confidence level", type: "Type", advice: "Advice",
    probabilities: "Probabilities", delivery: "Delivery", assessment: "Assessment", summary: "Summary",
    duration: "Duration (s)", speaking_time: "Speaking time (s)", speaking_ratio: "Speaking ratio", pause_count: "Pauses",
    mean_pause: "Mean pause (s)", longest_pause: "Longest pause (s)", syllables: "Syllables", speech_rate: "Speech rate (syll/s)",
    articulation_rate: "Articulation rate (syll/s)", pitch_median_hz: "Median pitch (Hz)", pitch_sd_semitones: "Pitch variation (st)",
    pitch_range_semitones: "Pitch range (st)", loudness_db: "Loudness (dBFS)", loudness_sd_db: "Loudness variation (dB)",
    voiced_ratio: "Voiced ratio", voice_breaks: "Voice breaks",
    segments: "Segments", elapsed: "Recorded (s)", lastEmotion: "Latest emotion", dominant: "Dominant emotion", stability: "Stability",
    changes: "Emotion changes", direction: "Direction", arousal: "Arousal", valence: "Valence", pauses: "Pauses", questions: "Questions",
    noSpeech: "No speech detected", noMic: "This browser cannot record (it needs microphone permission and MediaRecorder).",
    network: "The service cannot be reached", chooseFile: "Choose a recording first.", badRanges: "Write each question as \"start-end label\", e.g. 0-95 Q1.",
    settled: "settling down", tensed: "tensing up", steady: "steady", emotionOff: "Emotion inference is off: delivery metrics only.",
  },
};
const COLORS = {
  neutral: "#8a94a6", calm: "#3aa6a0", happy: "#f2b01e", sad: "#3f6fd8", angry: "#d6402f",
  fearful: "#8e5bd6", disgust: "#5a9e3a", surprised: "#e46fb0",
};
const LABELS_ZH = {
  // labels.CHINESE_NAMES
  neutral: "中性", calm: "平静", happy: "高兴", sad: "悲伤", angry: "愤怒", fearful: "恐惧", disgust: "厌恶", surprised: "惊讶",
};
const labelName = (label) => (lang === "zh" && LABELS_ZH[label]) || label;
const DELIVERY_KEYS = ["duration", "speaking_time", "speaking_ratio", "pause_count", "mean_pause", "longest_pause",
  "syllables", "speech_rate", "articulation_rate", "pitch_median_hz", "pitch_sd_semitones", "pitch_range_semitones",
  "loudness_db", "loudness_sd_db", "voiced_ratio", "voice_breaks"];

const $ = (id) => document.getElementById(id);
let lang = sessionStorage.getItem("lang") || ((navigator.language || "").toLowerCase().startsWith("zh") ? "zh" : "en");
const t = (key) => TEXT[lang][key] || key;

// -- small DOM helpers ---------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function fmt(value, digits = 2) {
  if (value === null || value === undefined) return "—";
  return typeof value === "number" && !Number.isInteger(value) ? value.toFixed(digits) : String(value);
}

function showError(id, message) {
  const box = $(id);
  box.textContent = message || "";
  box.hidden = !message;
}

function figures(pairs) {
  const list = el("dl", { class: "figures" });
  for (const [label, value] of pairs) list.append(el("div", {}, el("dt", { text: label }), el("dd", { text: value })));
  return list;
}

function deliveryFigures(delivery) {
  return figures(DELIVERY_KEYS.filter((k) => k in delivery).map((k) => [t(k), fmt(delivery[k])]));
}

function bars(probabilities) {
  const grid = el("div", { class: "bars", role: "list" });
  const entries = Object.entries(probabilities).sort((a, b) => b[1] - a[1]);
  for (const [label, p] of entries) {
    const fill = el("div");
    fill.style.width = `${Math.round(p * 100)}%`;
    fill.style.background = COLORS[label] || "#888";
    const bar = el("div", { class: "bar", role: "meter", "aria-valuemin": "0", "aria-valuemax": "1", "aria-valuenow": String(p), "aria-label": label }, fill);
    grid.append(el("span", { text: labelName(label), role: "listitem" }), bar, el("span", { class: "num", text: `${(p * 100).toFixed(1)}%` }));
  }
  return grid;
}

function legend(box) {
  box.replaceChildren(...Object.entries(COLORS).map(([label, color]) => {
    const item = el("span", { text: labelName(label) });
    item.style.setProperty("--c", color);
    return item;
  }));
}

function adviceList(items) {
  return el("ul", { class: "advice" }, ...items.map((text) => el("li", { text: typeof text === "string" ? text : text.text })));
}

// -- API calls -------------------------------------------------------------------------------------

function headers() {
  const key = $("api-key").value.trim();
  return key ? { "X-API-Key": key } : {};
}

// The API's envelope, or an error carrying the API's own message.
async function api(path, options = {}) {
  const separator = path.includes("?") ? "&" : "?";
  let response;
  try {
    response = await fetch(`${path}${separator}lang=${lang}`, { ...options, headers: { Accept: "application/json", ...headers() } });
  } catch (error) {
    throw new Error(`${t("network")}: ${error.message}`);
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new Error(`${t("network")} (HTTP ${response.status})`);
  }
  if (!body.success) throw new Error(body.message || `HTTP ${response.status}`);
  return body.data;
}

// -- language, key, tabs ---------------------------------------------------------------------------

function applyLanguage() {
  document.documentElement.lang = lang;
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-placeholder]")) node.placeholder = t(node.dataset.i18nPlaceholder);
  document.title = t("title");
  $("lang").value = lang;
}

function setupTabs() {
  const tabs = [...document.querySelectorAll("[role=tab]")];
  const select = (tab) => {
    for (const other of tabs) {
      const on = other === tab;
      other.setAttribute("aria-selected", String(on));
      other.tabIndex = on ? 0 : -1;
      $(other.getAttribute("aria-controls")).hidden = !on;
    }
    tab.focus();
  };
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (step) select(tabs[(i + step + tabs.length) % tabs.length]);
      if (event.key === "Home") select(tabs[0]);
      if (event.key === "End") select(tabs[tabs.length - 1]);
    });
  });
}

// -- file --------------------------------------------------------------------------------------------

let chosenFile = null;

function renderAnalysis(data) {
  const box = $("file-result");
  const parts = [];
  const final = data.final_result;
  if (final) {
    parts.push(el("div", { class: "headline" },
      el("span", { class: "emotion", id: "result-emotion", text: final.recommended_emotion }),
      el("span", { text: `${t("confidence")}: ${(final.confidence * 100).toFixed(1)}%` })));
    parts.push(el("h3", { text: t("probabilities") }), bars(final.probabilities));
  } else {
    parts.push(el("p", { class: "muted", text: t("emotionOff") }));
  }
  const a = data.interview_assessment;
  if (a) {
    parts.push(el("h3", { text: t("assessment") }),
      figures([[t("score"), fmt(a.score)], [t("type"), a.emotion_type], [t("level"), a.confidence_level]]),
      el("h3", { text: t("advice") }), adviceList(a.recommendations || []));
  }
  if (data.delivery) parts.push(el("h3", { text: t("delivery") }), deliveryFigures(data.delivery));
  box.replaceChildren(...parts);
}

function chooseFile(file) {
  chosenFile = file || null;
  $("file-name").textContent = file ? file.name : "";
  $("analyze-btn").disabled = !file;
}

async function analyzeFile() {
  showError("file-error", "");
  if (!chosenFile) return showError("file-error", t("chooseFile"));
  const button = $("analyze-btn");
  button.disabled = true;
  button.textContent = t("analyzing");
  try {
    const form = new FormData();
    form.append("audio", chosenFile, chosenFile.name);
    renderAnalysis(await api("analyze", { method: "POST", body: form }));
  } catch (error) {
    $("file-result").replaceChildren();
    showError("file-error", error.message);
  } finally {
    button.disabled = false;
    button.textContent = t("analyze");
  }
}

function setupFile() {
  const zone = $("drop-zone");
  const input = $("file-input");
  zone.addEventListener("click", () => input.click());
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); }
  });
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    chooseFile(event.dataTransfer.files[0]);
  });
  input.addEventListener("change", () => chooseFile(input.files[0]));
  $("analyze-btn").addEventListener("click", analyzeFile);
}

// -- live ---------------------------------------------------------------------------------------------

const live = { ws: null, recorder: null, stream: null, segments: [], elapsed: 0, emotionOff: false };

function streamUrl() {
  const url = new URL("stream", window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

function drawLiveTimeline() {
  const box = $("live-timeline");
  const span = Math.max(live.elapsed, ...live.segments.map((s) => s.end), 10);
  box.replaceChildren(...live.segments.map((s) => {
    const label = s.final_result ? s.final_result.recommended_emotion_label : null;
    const name = s.final_result ? s.final_result.recommended_emotion : t("segments");
    const block = el("div", { class: "seg", role: "listitem", title: `${fmt(s.start)}–${fmt(s.end)} s ${name}`, "aria-label": `${fmt(s.start)}–${fmt(s.end)} s ${name}` });
    block.style.left = `${(100 * s.start) / span}%`;
    block.style.width = `${(100 * (s.end - s.start)) / span}%`;
    block.style.background = COLORS[label] || "#6b7b99";
    return block;
  }));
}

function drawLiveFigures() {
  const segs = live.segments;
  const deliveries = segs.map((s) => s.delivery).filter(Boolean);
  const speaking = deliveries.reduce((sum, d) => sum + d.speaking_time, 0);
  const syllables = deliveries.reduce((sum, d) => sum + d.syllables, 0);
  const pitches = deliveries.map((d) => d.pitch_median_hz).filter((p) => p);
  const last = segs.length ? segs[segs.length - 1].final_result : null;
  $("live-figures").replaceChildren(...figures([
    [t("elapsed"), fmt(live.elapsed, 1)],
    [t("segments"), String(segs.length)],
    [t("speaking_time"), fmt(speaking, 1)],
    [t("speech_rate"), live.elapsed ? fmt(syllables / live.elapsed) : "—"],
    [t("articulation_rate"), speaking ? fmt(syllables / speaking) : "—"],
    [t("pitch_median_hz"), pitches.length ? fmt(pitches.reduce((a, b) => a + b, 0) / pitches.length, 0) : "—"],
    [t("lastEmotion"), last ? last.recommended_emotion : "—"],
  ]).children);
}

function renderSummary(message) {
  const parts = [el("h2", { text: t("summary") })];
  const s = message.session_summary;
  if (s) {
    parts.push(el("div", { class: "headline" }, el("span", { class: "emotion", text: s.dominant_emotion }),
      el("span", { text: `${t("stability")}: ${fmt(s.stability.score)}` })));
    parts.push(bars(s.emotion_distribution), el("h3", { text: t("advice") }), adviceList(s.recommendations || []));
  } else if (!message.segments) {
    parts.push(el("p", { class: "muted", text: t("noSpeech") }));
  }
  if (message.delivery) parts.push(el("h3", { text: t("delivery") }), deliveryFigures(message.delivery));
  $("live-summary").replaceChildren(...parts);
}

function onLiveMessage(event) {
  const message = JSON.parse(event.data);
  if (message.type === "ready") {
    live.emotionOff = !message.emotion_inference;
    live.recorder.start(250);
    $("live-status").textContent = t("recording");
    $("live-stop").disabled = false;
  } else if (message.type === "level") {
    live.elapsed = message.time;
    const bar = $("level-bar");
    bar.style.width = `${Math.max(0, Math.min(100, ((message.db + 70) / 70) * 100))}%`;
    bar.classList.toggle("speaking", message.speaking);
    $("level-text").textContent = `${fmt(message.db, 0)} dB · ${message.speaking ? t("speaking") : t("silent")}`;
    drawLiveTimeline();
    drawLiveFigures();
  } else if (message.type === "segment") {
    live.segments.push(message);
    drawLiveTimeline();
    drawLiveFigures();
  } else if (message.type === "summary") {
    live.done = true;
    live.elapsed = message.duration;
    drawLiveFigures();
    renderSummary(message);
    $("live-status").textContent = t("stopped");
  } else if (message.type === "error") {
    showError("live-error", message.message);
  }
}

function releaseMicrophone() {
  if (live.stream) live.stream.getTracks().forEach((track) => track.stop());
  live.stream = null;
  $("live-start").disabled = false;
  $("live-stop").disabled = true;
}

async function startLive() {
  showError("live-error", "");
  $("live-summary").replaceChildren();
  if (!navigator.mediaDevices || !window.MediaRecorder) return showError("live-error", t("noMic"));
  Object.assign(live, { segments: [], elapsed: 0, done: false });
  drawLiveTimeline();
  drawLiveFigures();
  $("live-start").disabled = true;
  $("live-status").textContent = t("connecting");
  try {
    live.stream = await navigator.mediaDevices.getUserMedia({ audio: { channelCount: 1 } });
  } catch (error) {
    releaseMicrophone();
    return showError("live-error", `${t("noMic")} (${error.message})`);
  }
  const type = ["audio/webm;codecs=opus", "audio/webm"].find((m) => MediaRecorder.isTypeSupported(m));
  if (!type) { releaseMicrophone(); return showError("live-error", t("noMic")); }
  live.recorder = new MediaRecorder(live.stream, { mimeType: type });
  const ws = new WebSocket(streamUrl());
  live.ws = ws;
  live.recorder.addEventListener("dataavailable", (event) => {
    if (event.data.size && ws.readyState === WebSocket.OPEN) ws.send(event.data);
  });
  live.recorder.addEventListener("stop", () => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "stop" }));
    releaseMicrophone();
  });
  ws.addEventListener("open", () => {
    const key = $("api-key").value.trim();
    ws.send(JSON.stringify({ type: "start", format: "webm", lang, ...(key ? { api_key: key } : {}) }));
  });
  ws.addEventListener("message", onLiveMessage);
  ws.addEventListener("close", (event) => {
    if (live.recorder && live.recorder.state !== "inactive") live.recorder.stop();
    releaseMicrophone();
    if (event.code !== 1000 && !live.done && $("live-error").hidden) showError("live-error", `${t("network")} (${event.code})`);
  });
}

function stopLive() {
  $("live-stop").disabled = true;
  if (live.recorder && live.recorder.state !== "inactive") live.recorder.stop();
}

// -- interview --------------------------------------------------------------------------------------

let jobResult = null;

function parseRanges(text) {
  const ranges = [];
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const match = line.match(/^(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*(.*)$/);
    if (!match) throw new Error(t("badRanges"));
    ranges.push({ start: Number(match[1]), end: Number(match[2]), ...(match[3] ? { label: match[3] } : {}) });
  }
  return ranges;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function submitJob() {
  showError("job-error", "");
  $("job-result").hidden = true;
  const file = $("job-file").files[0];
  if (!file) return showError("job-error", t("chooseFile"));
  const button = $("job-submit");
  button.disabled = true;
  const progress = $("job-progress");
  try {
    const ranges = parseRanges($("job-ranges").value);
    const form = new FormData();
    form.append("audio", file, file.name);
    form.append("lang", lang);
    if (ranges.length) form.append("options", JSON.stringify({ ranges }));
    const accepted = await api("jobs", { method: "POST", body: form });
    progress.hidden = false;
    for (;;) {
      const job = await api(`jobs/${accepted.job_id}`);
      progress.value = job.progress;
      $("job-status").textContent = `${t(job.status)} ${fmt(job.progress, 0)}%`;
      if (job.status === "done") { jobResult = job.result; renderJob(job.result); break; }
      if (job.status === "failed") throw new Error(job.error ? job.error.message : t("failed"));
      await sleep(700);
    }
  } catch (error) {
    showError("job-error", error.message);
  } finally {
    button.disabled = false;
  }
}

function renderJob(result) {
  $("job-result").hidden = false;
  drawJobTimeline(result);
  legend($("job-legend"));
  const questions = $("job-questions");
  questions.replaceChildren();
  if (result.questions.length) {
    const table = el("table", {}, el("tr", {}, ...["#", t("questions"), "s", t("segments"), t("dominant"), t("speech_rate")].map((h) => el("th", { text: h }))));
    for (const q of result.questions) {
      table.append(el("tr", {}, el("td", { text: String(q.index) }), el("td", { text: q.label || "" }),
        el("td", { text: `${fmt(q.start, 1)}–${fmt(q.end, 1)}` }), el("td", { text: String(q.segments) }),
        el("td", { text: q.dominant_emotion || "—" }), el("td", { text: fmt(q.delivery.speech_rate) })));
    }
    questions.append(el("h2", { text: t("questions") }), table);
  }
  const a = result.assessment;
  const parts = [el("h2", { text: t("assessment") })];
  if (a) {
    parts.push(figures([
      [t("dominant"), a.dominant_emotion || "—"], [t("changes"), fmt(a.emotion_changes)],
      [t("direction"), a.direction ? t(a.direction) : "—"], [t("score"), fmt(a.average_score)],
      [t("arousal"), a.arousal ? fmt(a.arousal.mean) : "—"], [t("valence"), a.valence ? fmt(a.valence.mean) : "—"],
    ]), el("h3", { text: t("advice") }), adviceList(a.recommendations));
  }
  parts.push(el("h3", { text: t("delivery") }), deliveryFigures(result.delivery));
  $("job-assessment").replaceChildren(...parts);
}

function drawJobTimeline(result) {
  const chart = $("job-timeline");
  const title = chart.querySelector("title");
  chart.replaceChildren(title);
  const W = 1000, left = 40, right = 10;
  const duration = Math.max(result.basic_info.duration, 1);
  const x = (s) => left + ((W - left - right) * s) / duration;
  for (const q of result.questions) {
    chart.append(svg("rect", { x: x(q.start), y: 4, width: Math.max(1, x(q.end) - x(q.start)), height: 16, fill: q.index % 2 ? "#dfe7fb" : "#eef2fc", class: "question" }));
    const label = svg("text", { x: x(q.start) + 3, y: 16, "font-size": 11, fill: "#1d2330" });
    label.textContent = q.label || `Q${q.index}`;
    chart.append(label);
  }
  for (const [start, end] of result.delivery.pauses) {
    chart.append(svg("rect", { x: x(start), y: 58, width: Math.max(1, x(end) - x(start)), height: 6, fill: "#9aa3b2", class: "pause" }));
  }
  for (const s of result.timeline) {
    const rect = svg("rect", { x: x(s.start), y: 24, width: Math.max(2, x(s.end) - x(s.start)), height: 30, rx: 2, fill: COLORS[s.emotion_label] || "#6b7b99", class: "segment" });
    const tip = svg("title");
    tip.textContent = `${fmt(s.start, 1)}–${fmt(s.end, 1)} s ${s.emotion || ""} ${s.confidence ? (s.confidence * 100).toFixed(0) + "%" : ""}`;
    rect.append(tip);
    chart.append(rect);
  }
  // arousal and valence over time, 0..1, in the band y 80..200
  const y = (v) => 200 - 120 * v;
  chart.append(svg("line", { x1: left, x2: W - right, y1: y(0.5), y2: y(0.5), stroke: "#d7dbe3", "stroke-dasharray": "4 4" }));
  for (const [key, color] of [["arousal", "#d6402f"], ["valence", "#2457c5"]]) {
    const points = result.timeline.filter((s) => s[key] !== null && s[key] !== undefined).map((s) => `${x((s.start + s.end) / 2)},${y(s[key])}`);
    if (points.length) {
      chart.append(svg("polyline", { points: points.join(" "), fill: "none", stroke: color, "stroke-width": 2, class: key }));
      const name = svg("text", { x: 4, y: key === "arousal" ? 95 : 110, "font-size": 11, fill: color });
      name.textContent = t(key);
      chart.append(name);
    }
  }
  const ticks = 5;
  for (let i = 0; i <= ticks; i++) {
    const s = (duration * i) / ticks;
    const label = svg("text", { x: x(s), y: 222, "font-size": 11, fill: "#5b6475", "text-anchor": i === 0 ? "start" : i === ticks ? "end" : "middle" });
    label.textContent = `${s.toFixed(0)} s`;
    chart.append(label);
  }
}

function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = el("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function timelineCsv(result) {
  const columns = ["index", "start", "end", "question", "emotion_label", "confidence", "arousal", "valence",
    "speech_rate", "pitch_median_hz", "loudness_db"];
  const cell = (v) => (v === null || v === undefined ? "" : /[",\n]/.test(String(v)) ? `"${String(v).replace(/"/g, '""')}"` : String(v));
  const rows = result.timeline.map((s) => [s.index, s.start, s.end, s.question, s.emotion_label, s.confidence, s.arousal,
    s.valence, s.delivery && s.delivery.speech_rate, s.delivery && s.delivery.pitch_median_hz, s.delivery && s.delivery.loudness_db]);
  return [columns, ...rows].map((row) => row.map(cell).join(",")).join("\n") + "\n";
}

function setupInterview() {
  $("job-submit").addEventListener("click", submitJob);
  $("export-json").addEventListener("click", () => jobResult && download("interview.json", "application/json", JSON.stringify(jobResult, null, 2)));
  $("export-csv").addEventListener("click", () => jobResult && download("interview.csv", "text/csv", timelineCsv(jobResult)));
}

// -- start --------------------------------------------------------------------------------------------

function main() {
  const key = $("api-key");
  key.value = sessionStorage.getItem("apiKey") || "";
  key.addEventListener("input", () => sessionStorage.setItem("apiKey", key.value.trim()));
  $("lang").addEventListener("change", (event) => {
    lang = event.target.value;
    sessionStorage.setItem("lang", lang);
    applyLanguage();
    legend($("live-legend"));
  });
  applyLanguage();
  setupTabs();
  setupFile();
  legend($("live-legend"));
  drawLiveFigures();
  $("live-start").addEventListener("click", startLive);
  $("live-stop").addEventListener("click", stopLive);
  setupInterview();
  // For tests: the result shown and the CSV export's text, without a download.
  window.consoleApi = { timelineCsv, result: () => jobResult };
}

main();
