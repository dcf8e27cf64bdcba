// The app's few pages as paths, so a reload or a shared link lands on the same page.
// chat-server answers any path without a file extension with index.html.

export type Route =
  | { page: 'home' }
  /** `seq`: a message to show (a search result), kept in memory, not in the path. */
  | { page: 'chat'; id: number; seq?: number }
  | { page: 'user'; id: number }
  | { page: 'me' }
  | { page: 'new-group' };

export function parse(path: string): Route {
  const chat = /^\/c\/(\d{1,16})$/.exec(path);
  if (chat) return { page: 'chat', id: Number(chat[1]) };
  const user = /^\/u\/(\d{1,16})$/.exec(path);
  if (user) return { page: 'user', id: Number(user[1]) };
  if (path === '/me') return { page: 'me' };
  if (path === '/new-group') return { page: 'new-group' };
  return { page: 'home' };
}

export function format(route: Route): string {
  switch (route.page) {
    case 'chat':
      return `/c/${route.id}`;
    case 'user':
      return `/u/${route.id}`;
    case 'me':
      return '/me';
    case 'new-group':
      return '/new-group';
    default:
      return '/';
  }
}

class Router {
  route = $state<Route>(parse(typeof location === 'undefined' ? '/' : location.pathname));

  constructor() {
    if (typeof window !== 'undefined') {
      window.addEventListener('popstate', () => {
        this.route = parse(location.pathname);
      });
    }
  }

  go(route: Route, replace = false): void {
    const path = format(route);
    if (location.pathname !== path) {
      if (replace) history.replaceState(null, '', path);
      else history.pushState(null, '', path);
    }
    this.route = route;
  }
}

export const router = new Router();
