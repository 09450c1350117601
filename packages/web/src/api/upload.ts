import { ApiError, csrfHeader, errorFromResponse } from './client.js';

/**
 * Sends a file as the request body with upload progress (fetch cannot report
 * it) and the same CSRF header as every change. Answers the response's text;
 * an answer other than 2xx rejects with the manager's error.
 */
export function uploadFile(method: 'POST' | 'PUT', url: string, file: File, onProgress: (percent: number) => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    xhr.setRequestHeader('content-type', 'application/octet-stream');
    xhr.setRequestHeader(csrfHeader, '1');
    xhr.setRequestHeader('accept', 'application/json');
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(Math.round((event.loaded / event.total) * 100));
    };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) return resolve(xhr.responseText);
      const response = new Response(xhr.responseText, { status: xhr.status, statusText: xhr.statusText });
      errorFromResponse(response).then(reject, reject);
    };
    xhr.onerror = () => reject(new ApiError(0, 'network', 'The upload was interrupted'));
    onProgress(0);
    xhr.send(file);
  });
}
